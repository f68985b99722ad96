"""Jobs yield to the live cameras: a job's process is paused while a camera sends frames unrestored.

Scheduling priority alone is not enough on a small machine: a job at nice 19 / SCHED_IDLE still takes the
caches, the memory bandwidth and the second core that a camera's engine needed a moment later, and the
camera's engine time grows (14 → 24 ms a 640×360 frame measured here) until frames go out unrestored.
So ``LiveGuard`` watches the cameras' count of frames sent unrestored for want of compute (``pressure``)
and stops the jobs' processes (SIGSTOP) as soon as it grows; it lets them go on (SIGCONT) once the cameras
have kept up for ``hold_s``. A machine too slow for its cameras with no job running would starve the jobs
for ever: the guard lets them run at least ``min_duty`` of the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class LiveGuard:
    def __init__(self, pressure: Callable[[], int], pids: Callable[[], list[int]], interval_s: float = 0.1,
                 hold_s: float = 2.0, min_duty: float = 0.1, period_s: float = 10.0) -> None:
        self.pressure = pressure  # frames the cameras sent unrestored for want of compute (a counter)
        self.pids = pids  # the running jobs' processes
        self.interval_s = interval_s
        self.hold_s = hold_s
        self.min_duty = min_duty
        self.period_s = period_s
        self.pauses = 0
        self.paused_s = 0.0
        self._paused: set[int] = set()
        self._paused_at = 0.0
        self._last_pressure_at = -hold_s
        self._free_until = 0.0
        self._seen = pressure()
        self._task: asyncio.Task[None] | None = None

    @property
    def paused(self) -> bool:
        return bool(self._paused)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="jobs-live-guard")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        count = self.pressure()
        pressured = count > self._seen
        self._seen = count
        if pressured:
            self._last_pressure_at = now
        if self._paused:
            self.paused_s += self.interval_s
            if now - self._last_pressure_at >= self.hold_s:
                self.resume()
            elif now - self._paused_at >= self.period_s * (1 - self.min_duty):
                self.resume()  # a duty slot: the jobs run min_duty of a period whatever the cameras do
                self._free_until = now + self.period_s * self.min_duty
        elif pressured and now >= self._free_until and self.pids():
            self.pause(now)

    def pause(self, now: float) -> None:
        for pid in self.pids():
            if _signal(pid, signal.SIGSTOP):
                self._paused.add(pid)
        if self._paused:
            self.pauses += 1
            self._paused_at = now
            log.debug("jobs paused: a live camera sent frames unrestored")

    def resume(self) -> None:
        for pid in self._paused:
            _signal(pid, signal.SIGCONT)
        self._paused.clear()

    async def stop(self) -> None:
        """Idempotent: nothing stays stopped (a stopped process would not even see SIGTERM)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.resume()


def _signal(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True
