"""A job's child process is started outside the event loop's own spawn, and is read, waited for and stopped."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import pytest

from streamer.jobs.runner import WorkerProcess, _lines, _stop


async def test_the_worker_starts_without_the_event_loop_s_spawn_and_is_read_and_reaped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvloop's spawn runs an after-fork hook in the child that can deadlock on a lock another server thread held,
    and then blocks the event loop for good: the worker must not be started through it."""

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("the event loop's spawn was used")

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(type(loop), "subprocess_exec", refuse)
    monkeypatch.setattr(asyncio, "create_subprocess_exec", refuse)
    script = "import sys; print('{\"event\": \"total\"}'); sys.stderr.write('a warning\\n'); sys.exit(3)"
    process = await WorkerProcess.start([sys.executable, "-c", script])
    assert [line async for line in _lines(process.stdout)] == [b'{"event": "total"}\n']
    assert [line async for line in _lines(process.stderr)] == [b"a warning\n"]
    assert await process.wait() == 3 and process.returncode == 3

    sleeper = await WorkerProcess.start([sys.executable, "-c", "import time; time.sleep(60)"])
    assert sleeper.returncode is None
    started = time.monotonic()
    await _stop(sleeper)  # terminated within its grace, reaped
    assert sleeper.returncode is not None and sleeper.returncode < 0
    assert time.monotonic() - started < 3
    await _stop(sleeper)  # idempotent
