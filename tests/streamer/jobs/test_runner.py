"""A job's child process is stopped: terminated within its grace, reaped (its start: tests/streamer/test_child_process.py)."""

from __future__ import annotations

import sys
import time

from streamer.child_process import ChildProcess
from streamer.jobs.runner import _stop


async def test_a_worker_is_terminated_within_its_grace_and_reaped() -> None:
    sleeper = await ChildProcess.start([sys.executable, "-c", "import time; time.sleep(60)"])
    assert sleeper.returncode is None
    started = time.monotonic()
    await _stop(sleeper)  # terminated within its grace, reaped
    assert sleeper.returncode is not None and sleeper.returncode < 0
    assert time.monotonic() - started < 3
    await _stop(sleeper)  # idempotent
