"""A supervised stage that raises is counted, logged with its cause and restarted; one that returns is done."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest

from streamer.supervisor import Supervisor

BACKOFF_S = (0.05, 0.15, 0.3)
TIMER_RESOLUTION_S = 0.0015  # uvloop (libuv) schedules timers in whole milliseconds


class FlakyStage:
    """Raises on its first ``failures`` runs, then returns; records when each run started."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.starts: list[float] = []
        self.resets = 0

    async def run(self) -> None:
        self.starts.append(time.monotonic())
        if len(self.starts) <= self.failures:
            raise RuntimeError(f"broke on run {len(self.starts)}")

    def reset(self) -> None:
        self.resets += 1


async def test_failing_stage_is_restarted_with_growing_backoff_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    stage = FlakyStage(failures=3)
    supervisor = Supervisor("cam", "encode", stage.run, lambda: False, stage.reset, backoff_s=BACKOFF_S)
    with caplog.at_level(logging.ERROR, logger="streamer.supervisor"):
        await asyncio.wait_for(supervisor.run(), 5)
    assert len(stage.starts) == 4 and stage.resets == 3
    records = [record for record in caplog.records if "stage encode failed" in record.getMessage()]
    # The pause asked for grows with each failure in a row, and the stage really waits it out (no more than
    # the loop's timer resolution early: uvloop counts whole milliseconds).
    pauses = [re.findall(r"restarting in ([0-9.]+) s", record.getMessage()) for record in records]
    assert pauses == [[f"{pause:.2f}"] for pause in BACKOFF_S] == [["0.05"], ["0.15"], ["0.30"]]
    gaps = [later - earlier for earlier, later in zip(stage.starts, stage.starts[1:], strict=False)]
    assert all(gap >= pause - TIMER_RESOLUTION_S for gap, pause in zip(gaps, BACKOFF_S, strict=True))
    health = supervisor.health
    assert health.restarts == 3 and health.finished and not health.running
    assert health.last_error == "RuntimeError: broke on run 3"
    assert len(records) == 3 and "broke on run 1" in records[0].getMessage()
    assert records[0].exc_info is not None and all(record.exc_info is None for record in records[1:])


async def test_stage_that_fails_while_stopping_is_not_restarted() -> None:
    stage = FlakyStage(failures=10)
    supervisor = Supervisor("cam", "source", stage.run, lambda: True, stage.reset)
    await asyncio.wait_for(supervisor.run(), 5)
    assert len(stage.starts) == 1 and stage.resets == 0 and supervisor.health.restarts == 0


async def test_cancelling_the_supervisor_cancels_the_stage() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(Supervisor("cam", "sink-file", forever, lambda: False).run())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
