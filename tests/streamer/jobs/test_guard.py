"""LiveGuard on a real process: stopped as soon as the cameras' unrestored count grows, continued once they
have kept up for hold_s, and never starved below its duty share; nothing is left stopped."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.jobs.guard import LiveGuard


def state(pid: int) -> str:
    """The process's state letter from /proc (T = stopped)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()[0]


def settled(pid: int, wanted: str) -> bool:
    deadline = time.monotonic() + 2
    while state(pid) != wanted and time.monotonic() < deadline:
        time.sleep(0.01)
    return state(pid) == wanted


@pytest.fixture
def job() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


def test_pauses_on_pressure_resumes_after_hold_and_keeps_a_duty_share(job: subprocess.Popen[bytes]) -> None:
    unrestored = [0]
    guard = LiveGuard(lambda: unrestored[0], lambda: [job.pid], interval_s=0.1, hold_s=1.0, min_duty=0.1,
                      period_s=10.0)
    guard.tick(0.0)
    assert not guard.paused and settled(job.pid, "S")
    unrestored[0] += 3  # a camera sent frames unrestored
    guard.tick(0.1)
    assert guard.paused and guard.pauses == 1 and settled(job.pid, "T")
    guard.tick(0.6)
    assert guard.paused  # calm for 0.5 s < hold_s
    guard.tick(1.2)
    assert not guard.paused and settled(job.pid, "S")
    # a camera that never keeps up: the job still gets a slot every period
    now = 1.2
    while now < 30:
        now = round(now + 0.1, 1)
        unrestored[0] += 1
        guard.tick(now)
    running_share = 1 - guard.paused_s / 30
    assert 0.05 < running_share < 0.3, running_share


async def test_stop_leaves_nothing_stopped(job: subprocess.Popen[bytes]) -> None:
    unrestored = [0]
    guard = LiveGuard(lambda: unrestored[0], lambda: [job.pid])
    unrestored[0] = 1
    guard.tick(10.0)
    assert settled(job.pid, "T")
    await guard.stop()
    await guard.stop()
    assert settled(job.pid, "S")
