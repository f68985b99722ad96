"""Supervised stages: a stage that raises is logged with its cause, counted, and restarted with backoff.

After Erlang/OTP's one-for-one supervisor, kept small: each stage of a camera pipeline (source, restore,
encode, every sink) runs under its own ``Supervisor``. A stage that *returns* has finished for good (its
input ended, or a stop was asked for); a stage that *raises* is restarted after a pause that grows with
consecutive failures and resets once the stage has run healthily for a while. The channels around a stage
stay open across its restarts, so the stages before and after it, and the viewers, never notice more than
a short gap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

DEFAULT_BACKOFF_S: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
HEALTHY_AFTER_S = 30.0  # a stage that ran this long before failing starts again at the shortest pause


@dataclass
class StageHealth:
    """What the API and metrics show of one supervised stage."""

    restarts: int = 0
    last_error: str = ""
    last_error_at: float | None = None  # time.time() of the last failure
    running: bool = False
    finished: bool = False
    errors: list[str] = field(default_factory=list)  # the last few causes, newest last (bounded)

    def record(self, cause: str) -> None:
        self.restarts += 1
        self.last_error = cause
        self.last_error_at = time.time()
        self.errors.append(cause)
        del self.errors[:-5]


def describe_error(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class Supervisor:
    """Runs ``stage()`` until it returns; restarts it when it raises, unless ``stopping()`` says not to.

    ``on_restart`` runs before each restart (reset the stage's state: a new encoder context, a resync to
    the next keyframe). Cancelling ``run`` cancels the stage.
    """

    def __init__(
        self,
        camera: str,
        stage_name: str,
        stage: Callable[[], Awaitable[None]],
        stopping: Callable[[], bool],
        on_restart: Callable[[], None] | None = None,
        backoff_s: Sequence[float] = DEFAULT_BACKOFF_S,
    ) -> None:
        self.camera = camera
        self.stage_name = stage_name
        self.health = StageHealth()
        self._stage = stage
        self._stopping = stopping
        self._on_restart = on_restart
        self._backoff = tuple(backoff_s)

    async def run(self) -> None:
        failures = 0
        while True:
            started = time.monotonic()
            self.health.running = True
            try:
                await self._stage()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                cause = describe_error(error)
                if self._stopping():
                    log.info("camera %s: %s ended while stopping: %s", self.camera, self.stage_name, cause)
                    break
                if time.monotonic() - started >= HEALTHY_AFTER_S:
                    failures = 0
                pause = self._backoff[min(failures, len(self._backoff) - 1)]
                failures += 1
                self.health.record(cause)
                # The first failure of a stage gets its traceback; repeats get one line each.
                log.error(
                    "camera %s: stage %s failed (%d restart(s)): %s; restarting in %.2f s",
                    self.camera, self.stage_name, self.health.restarts, cause, pause,
                    exc_info=error if self.health.restarts == 1 else None,
                )
                self.health.running = False
                await asyncio.sleep(pause)
                if self._stopping():
                    break
                if self._on_restart is not None:
                    self._on_restart()
                continue
            finally:
                self.health.running = False
            break
        self.health.finished = True
