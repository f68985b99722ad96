"""The restoration stage: windows in, restored frames out, never slower than the camera."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from engines.base import Engine
from streamer.graph.channel import Channel, ChannelClosed
from streamer.graph.frames import Frame
from streamer.histogram import ENGINE_BUCKETS_S, LatencyHistogram
from streamer.inference.scheduler import DeadlineExpired, deadline
from streamer.ladder import LadderController, Level, ModelLevel
from streamer.window import TemporalWindow

log = logging.getLogger(__name__)


MAX_PENDING_FRAMES = 150  # > max_wait_s (1 s) of a 120 fps camera: held only while the encoder is behind
DEADLINE_INTERVALS = 4  # a restoration later than this many frame intervals is abandoned (engine_slow)
# windows that may wait behind the one in the engine, for a level that keeps up on average: a restoration a little
# over the frame interval now and then (the load's jitter) delays the next window instead of sending its frame
# out unrestored
MAX_WAITING_WINDOWS = 1
DEFAULT_INTERVAL_S = 0.04
# A camera silent this long (and at least IDLE_FLUSH_INTERVALS of its frame interval) has its look-ahead
# frames sent out without their future instead of held until it comes back (seconds or minutes later).
IDLE_FLUSH_MIN_S = 1.0
IDLE_FLUSH_INTERVALS = 4


@dataclass
class RestoreStats:
    frames_in: int = 0
    frames_out: int = 0
    restored: int = 0  # through any level of the ladder
    restored_by_level: dict[str, int] = field(default_factory=dict)
    level: str = ""  # the ladder's level now
    level_switches: int = 0  # restored frames sent out at another level than the restored frame before them
    dropped: int = 0  # frames lost because the encoder fell more than MAX_PENDING_FRAMES behind
    degraded: dict[str, int] = field(default_factory=lambda: {"engine_busy": 0, "engine_slow": 0, "engine_error": 0})
    # restorations a level raised on (the frame restored by a level below it instead), by level
    level_failures: dict[str, int] = field(default_factory=dict)
    engine_latency: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(ENGINE_BUCKETS_S))
    # the last 500 inference times, for tools that report exact percentiles (tools/gpu_live.py)
    engine_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=500))

    def degrade(self, reason: str) -> None:
        self.degraded[reason] = self.degraded.get(reason, 0) + 1


class RestoreStage:
    """Feeds windows to the engine in a worker thread and emits frames in order.

    Live policy: one window in the engine at a time and, while the level keeps up (``_engine_has_room``), at
    most ``MAX_WAITING_WINDOWS`` waiting behind it (run in order, so a recurrent model's state carries on); a
    frame that becomes ready while they are all taken goes out unrestored (``engine_busy``), and a waiting
    window whose deadline passed before it ran is dropped unrun (its frame has gone out, ``engine_slow``); a
    restoration that takes longer than ``max_wait_s`` is abandoned and its frame goes out unrestored (``engine_slow``); a level that fails
    passes the window to the ladder's next level down (counted in ``level_failures``), and only a failure of
    the last level sends the frame out unrestored (``engine_error``). Output frame rate therefore equals input frame rate.

    When no frame arrives for ``IDLE_FLUSH_MIN_S`` (or ``IDLE_FLUSH_INTERVALS`` frame intervals, whichever
    is longer) the window's look-ahead frames go out edge-padded and the window starts afresh: a camera
    that drops does not leave its last frames waiting for the reconnect, to reach the viewers (and the
    end-to-end latency) as old as the outage.

    The frames that queue up behind a restoration in flight leave in one burst once it is done; the emit
    loop waits for room in ``outbox`` instead of letting the burst overflow it, so the skip path never
    costs an output frame. Only an encoder that stays behind for longer than ``MAX_PENDING_FRAMES``
    frames loses frames (the newest, counted in ``stats.dropped``). The outbox is not closed here: the
    stage may be restarted by its supervisor, and its owner closes the outbox when the stage is done.
    """

    def __init__(
        self,
        engine: Engine,
        window: TemporalWindow,
        inbox: Channel[Frame],
        outbox: Channel[Frame],
        max_wait_s: float = 1.0,
        stats: RestoreStats | None = None,
        levels: list[Level] | None = None,
        controller: LadderController | None = None,
        name: str = "",
    ) -> None:
        self.engine = engine
        self.levels = levels or [ModelLevel("full", engine)]
        self.controller = controller or LadderController([level.name for level in self.levels])
        self.name = name or inbox.name
        self.interval_s = DEFAULT_INTERVAL_S  # the camera's frame interval, from the frames' timestamps
        self.window = window
        self.inbox = inbox
        self.outbox = outbox
        self.max_wait_s = max_wait_s
        self.stats = stats or RestoreStats()
        self.stats.level = self.controller.level
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"engine-{inbox.name}")
        # frames in order, each with its restoration (None: none)
        self._pending: deque[tuple[Frame, Submitted | None]] = deque()
        self._pending_changed = asyncio.Event()
        self._in_flight: deque[Submitted] = deque()  # oldest first
        self._intake_done = False
        self._last_level: str | None = None  # the level of the last restored frame sent out
        self._last_error_log = 0.0
        self._errors_since_log = 0

    async def run(self) -> None:
        self._intake_done = False
        emitter = asyncio.create_task(self._emit_loop(), name=f"restore-emit-{self.inbox.name}")
        try:
            await self._intake_loop()
        except BaseException:
            emitter.cancel()
            raise
        finally:
            self._intake_done = True
            self._pending_changed.set()
        await emitter

    def reset(self) -> None:
        """Forget the window and what was pending (after a failure, before the supervisor restarts us)."""
        self.stats.dropped += len(self._pending)
        self._pending.clear()
        self.window.reset()

    def stop(self) -> None:
        self.inbox.close()

    async def close(self) -> None:
        """Wait for the restoration in flight (never free an engine under a running inference), then
        release the worker thread."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    async def _intake_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last: Frame | None = None
        while True:
            try:
                frame = await asyncio.wait_for(self.inbox.get(), max(IDLE_FLUSH_MIN_S, IDLE_FLUSH_INTERVALS * self.interval_s))
            except asyncio.TimeoutError:  # the camera is silent: its held frames go out now
                held = self.window.flush()
                self.window.resets += bool(held)  # counted as the reconnect's reset would have been
                for ready, neighbours in held:
                    self._schedule(loop, ready, neighbours)
                continue
            except ChannelClosed:
                break
            self.stats.frames_in += 1
            if last is not None and not frame.discontinuity and 0 < frame.timestamp - last.timestamp < 1.0:
                self.interval_s = 0.9 * self.interval_s + 0.1 * (frame.timestamp - last.timestamp)
            last = frame
            for ready, neighbours in self.window.push(frame):
                self._schedule(loop, ready, neighbours)
        for ready, neighbours in self.window.flush():
            self._schedule(loop, ready, neighbours)

    def _schedule(self, loop: asyncio.AbstractEventLoop, frame: Frame, neighbours: list[Frame]) -> None:
        if len(self._pending) >= MAX_PENDING_FRAMES:
            self.stats.dropped += 1  # the encoder is far behind: keep the frames already queued
            return
        if self.engine.passes_through:
            self._pending.append((frame, None))  # nothing to restore: no thread hop, no RGB conversion
        elif self._engine_has_room(self.levels[self.controller.index]):
            level = self.levels[self.controller.index]
            expires = time.monotonic() + self._deadline_s()
            future = loop.run_in_executor(self._executor, self._infer_timed, level, neighbours, expires)
            submitted = Submitted(future, self.controller.index, expires)
            self._in_flight.append(submitted)
            self._pending.append((frame, submitted))
        else:
            self.stats.degrade("engine_busy")
            self._frame_done(missed=True, blamed=self._busy_level_blamed())
            self._pending.append((frame, None))
        self._pending_changed.set()

    def _engine_has_room(self, level: Level) -> bool:
        """Whether a window for ``level`` may go to the engine now: it is idle, or a window may wait behind the
        one in it because ``level`` keeps up (its measured cost within the frame interval, no frame missed in the
        ladder's window), so being late is the load's jitter. Behind a level that has become slower than the
        frame interval a waiting window would only make the next one late as well (and the level below, after
        the ladder steps down, wait behind it)."""
        while self._in_flight and self._in_flight[0].future.done():
            self._in_flight.popleft()
        if not self._in_flight:
            return True
        cost = self.controller.costs[level.name].seconds
        keeps_up = cost is not None and cost <= self.controller.headroom * self.interval_s and self.controller.steady
        return keeps_up and len(self._in_flight) <= MAX_WAITING_WINDOWS

    def _busy_level_blamed(self) -> bool:
        """Whether a frame that found the engine taken counts against the ladder's level now: not while the
        engine is still on a window of the level the ladder has just left, within that window's deadline (the
        first frames after a step down from a slow level found it busy with the slow level's last window, and
        three of them stepped the ladder down again, past a level that keeps up). A window that hangs past its
        deadline is blamed on the level now, so the ladder still moves for an engine that does not return."""
        now = time.monotonic()
        return any(submitted.level_index == self.controller.index or now >= submitted.expires
                   for submitted in self._in_flight)

    async def _emit_loop(self) -> None:
        while True:
            if not self._pending:
                if self._intake_done:
                    return
                self._pending_changed.clear()
                await self._pending_changed.wait()
                continue
            frame, submitted = self._pending[0]
            if submitted is not None:
                frame = await self._result(frame, submitted)
            await self.outbox.wait_for_space()
            self._pending.popleft()
            self.stats.frames_out += 1
            if frame.level is not None:
                if self._last_level is not None and frame.level != self._last_level:
                    frame.level_switch = True  # the encoder starts a new GOP here: no prediction across the switch
                    self.stats.level_switches += 1
                self._last_level = frame.level
            self.outbox.put(frame)

    async def _result(self, frame: Frame, submitted: Submitted) -> Frame:
        """The restored frame, or ``frame`` itself where its restoration failed or is not done by its deadline
        (counted from when its window was complete, not from when the frames before it left)."""
        future = submitted.future
        try:
            timeout = max(0.0, submitted.expires - time.monotonic())
            image, seconds, level, failures = await asyncio.wait_for(asyncio.shield(future), timeout)
        except (asyncio.TimeoutError, DeadlineExpired):  # late, or dropped unrun by the shared engine's queue
            self.stats.degrade("engine_slow")
            future.add_done_callback(self._late_result)
            # a late window of a level the ladder has left is that level's miss, already judged
            self._frame_done(missed=True, blamed=submitted.level_index == self.controller.index)
            return frame
        except Exception as error:
            self.stats.degrade("engine_error")
            self._log_error(error)
            self._frame_done(missed=True)
            return frame
        self.stats.restored += 1
        self.stats.restored_by_level[level.name] = self.stats.restored_by_level.get(level.name, 0) + 1
        self.stats.engine_latency.observe(seconds)  # observed on the loop thread, where metrics read it
        self.stats.engine_seconds.append(seconds)
        self.controller.observe(level.name, seconds, time.monotonic())
        if failures:
            self._level_failed(level, failures)
        self._frame_done(missed=False)
        return Frame(
            image=image,
            timestamp=frame.timestamp,
            wallclock=frame.wallclock,
            seq=frame.seq,
            discontinuity=frame.discontinuity,
            restored=True,
            original=frame,
            level=level.name,
        )

    def _deadline_s(self) -> float:
        """How long a restoration may take before its frame goes out without it."""
        return min(self.max_wait_s, max(0.1, DEADLINE_INTERVALS * self.interval_s))

    def _late_result(self, future: asyncio.Future[Restored]) -> None:
        """A restoration abandoned at its deadline still tells what its level costs (so the ladder steps
        down for a level far slower than the frame interval, not only for the frames it missed)."""
        if not future.cancelled() and future.exception() is None:
            _, seconds, level, failures = future.result()
            self.controller.observe(level.name, seconds, time.monotonic())
            if failures:
                self._level_failed(level, failures)

    def _level_failed(self, worked: Level, failures: list[tuple[str, str]]) -> None:
        """Levels raised and ``worked`` (below them) restored the frame: count, and step down to it at once."""
        for name, _ in failures:
            self.stats.level_failures[name] = self.stats.level_failures.get(name, 0) + 1
        before = self.controller.level
        level = self.controller.failed(self.levels.index(worked), time.monotonic())
        if level is not None:
            self.stats.level = level
            name, error = failures[0]
            log.warning("camera %s: restoration level %s -> %s (%s failed: %s)", self.name, before, level, name, error)

    def _frame_done(self, missed: bool, blamed: bool = True) -> None:
        """Tell the ladder how a frame went (a miss not ``blamed`` on the level now is not told); log (once) and
        count a change of level."""
        if missed and not blamed:
            return
        before = self.controller.level
        level = self.controller.frame(missed, self.interval_s, time.monotonic())
        if level is not None:
            self.stats.level = level
            direction = "down" if self.controller.levels.index(level) > self.controller.levels.index(before) else "up"
            log.info("camera %s: restoration level %s -> %s (%s; a frame every %.0f ms)", self.name, before, level,
                     self.controller.reason if direction == "down" else "trying the better level",
                     1000 * self.interval_s)

    def _infer_timed(self, level: Level, neighbours: list[Frame], expires: float) -> Restored:
        """Worker-thread body: the restored image, the seconds it took (RGB conversion and the wait for a
        shared engine included: what the frame costs this camera), the level that restored it, and the
        levels that raised before it. A level that raises (out of memory, a device lost) passes the window
        to the next level down, so the frame is still restored. A shared engine drops the window unrun if
        it is still queued at ``expires`` (its frame has gone out without it by then)."""
        if time.monotonic() >= expires:  # waited behind a late restoration: its frame has gone out without it
            raise DeadlineExpired("the window waited past its deadline")
        started = time.perf_counter()
        images = [frame.image for frame in neighbours]
        failures: list[tuple[str, str]] = []
        index = self.levels.index(level)
        with deadline(expires):
            while True:
                try:
                    image = level.restore(images, self.engine.info.reference_index)
                    break
                except DeadlineExpired:
                    raise
                except Exception as error:
                    if index + 1 >= len(self.levels):
                        raise
                    failures.append((level.name, f"{type(error).__name__}: {error}"))
                    index += 1
                    level = self.levels[index]
        return image, time.perf_counter() - started, level, failures

    def _log_error(self, error: BaseException) -> None:
        """Aggregate engine errors: one log line per second at most."""
        self._errors_since_log += 1
        now = time.monotonic()
        if now - self._last_error_log >= 1.0:
            log.error("engine failed %d time(s), frames pass unrestored: %s", self._errors_since_log, error)
            self._last_error_log = now
            self._errors_since_log = 0


Restored = tuple[np.ndarray, float, Level, list[tuple[str, str]]]  # image, seconds, level, (level, error) failed


@dataclass(frozen=True)
class Submitted:
    """A window given to the engine: its restoration, the ladder's level (index) it was given at, and when its
    frame goes out without it (monotonic)."""

    future: asyncio.Future[Restored]
    level_index: int
    expires: float
