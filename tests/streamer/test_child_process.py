"""A child process is started outside the event loop's own spawn, read, reaped, and never outlives a cancelled
start."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from typing import Any

import pytest

from streamer import child_process
from streamer.child_process import ChildProcess


async def test_the_event_loop_s_own_spawn_is_refused_in_tests() -> None:
    """The guard of tests/conftest.py: uvloop's spawn can hang the whole loop (streamer.child_process)."""
    with pytest.raises(RuntimeError, match="ChildProcess"):
        await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")


async def test_a_child_is_started_without_the_loop_s_spawn_and_is_read_and_reaped() -> None:
    script = "import sys; print('out'); sys.stderr.write('a warning\\n'); sys.exit(3)"
    process = await ChildProcess.start([sys.executable, "-c", script])
    assert await process.stdout.read() == b"out\n"
    assert await process.stderr.read() == b"a warning\n"
    assert await process.wait() == 3 and process.returncode == 3


async def test_a_start_cancelled_while_the_thread_spawns_kills_the_child(monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release = threading.Event(), threading.Event()
    started: list[subprocess.Popen[bytes]] = []
    popen = subprocess.Popen

    def slow_popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        entered.set()
        release.wait(10)
        started.append(popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(child_process.subprocess, "Popen", slow_popen)
    task = asyncio.create_task(ChildProcess.start([sys.executable, "-c", "import time; time.sleep(60)"]))
    assert await asyncio.to_thread(entered.wait, 10)
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(started) == 1 and started[0].returncode is not None  # killed and reaped
    assert started[0].returncode < 0
