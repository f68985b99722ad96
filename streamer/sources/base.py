"""The source interface and the worker-thread plumbing every source shares."""

from __future__ import annotations

import abc
import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.graph.channel import Channel
from streamer.graph.frames import Frame

log = logging.getLogger(__name__)


@dataclass
class SourceStats:
    frames: int = 0
    connects: int = 0
    reconnects: int = 0
    corrupt_packets: int = 0
    skipped_until_keyframe: int = 0
    size_changes: int = 0
    timestamp_jumps: int = 0
    connected: bool = False
    last_error: str = ""


class Timeline:
    """Maps each segment's own timestamps onto one timeline that never goes back and never jumps.

    A camera that reconnects restarts its timestamps; the new segment is anchored after the old one,
    at least one frame interval later and no earlier than the wallclock time that has passed. Within a
    segment the camera's own spacing is kept (variable frame rates pass through), except where its
    timestamps jump: backwards, or further ahead than the wallclock time that passed plus
    ``JUMP_TOLERANCE_S`` (a camera clock reset, a wrap). There the segment is re-anchored one frame
    interval after the previous frame, so viewers see neither a burst of frames squeezed into an instant
    nor a long hole in the timestamps.
    """

    JUMP_TOLERANCE_S = 1.0

    def __init__(self) -> None:
        self._origin = time.monotonic()
        self._offset: float | None = None
        self._last = -1.0
        self._last_local = 0.0
        self._last_now = 0.0
        self._interval = 0.04
        self.jumps = 0

    def new_segment(self) -> None:
        self._offset = None

    def map(self, local: float | None) -> float:
        now = time.monotonic() - self._origin
        if local is None:
            local = now if self._offset is None else self._last_local + self._interval
        starts_segment = self._offset is None
        if self._offset is None:
            self._offset = max(self._last + self._interval, now) - local
        elif not 0 < local - self._last_local <= now - self._last_now + self.JUMP_TOLERANCE_S:
            self.jumps += 1
            self._offset = self._last + self._interval - local
        mapped = local + self._offset
        if mapped <= self._last:  # cannot happen after the re-anchoring above; kept as the invariant
            mapped = self._last + 1e-3
        elif self._last >= 0 and not starts_segment:  # an outage is not a frame interval
            self._interval = min(max(mapped - self._last, 1e-3), 1.0)
        self._last = mapped
        self._last_local = local
        self._last_now = now
        return mapped


class Source(abc.ABC):
    """Produces frames from a blocking worker thread into ``channel``.

    ``run`` returns when the worker exits (stop requested, or a finite source ended); ``stop`` is
    idempotent and returns at once.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.stats = SourceStats()
        self.fps_hint = 25.0
        self.timeline = Timeline()
        self._stop = threading.Event()
        self._channel: Channel[Frame] | None = None
        self._seq = 0
        self._last_size: tuple[int, int] | None = None
        self._pending_discontinuity = False
        self._stop_requested: asyncio.Event | None = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask the worker to end; ``run`` returns at once (a worker blocked in a network read ends with
        its read timeout, on its own)."""
        self._stop.set()
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def run(self, channel: Channel[Frame]) -> None:
        """Produce into ``channel`` until stopped or the source ends; raises what the worker raised (the
        pipeline's supervisor restarts the source then). The channel stays open: its owner closes it."""
        self._channel = channel
        loop = asyncio.get_running_loop()
        channel.bind(loop)
        done: asyncio.Future[None] = loop.create_future()
        self._stop_requested = asyncio.Event()
        if self._stop.is_set():
            self._stop_requested.set()
        failure: list[BaseException] = []
        if self.stats.frames:
            self.mark_discontinuity()  # a restarted worker starts a new segment

        def worker() -> None:
            try:
                self._produce()
            except Exception as error:
                failure.append(error)
            finally:
                try:
                    loop.call_soon_threadsafe(_finish, done)
                except RuntimeError:
                    pass

        thread = threading.Thread(target=worker, name=f"source-{self.name}", daemon=True)
        thread.start()
        stop_wait = asyncio.ensure_future(self._stop_requested.wait())
        try:
            await asyncio.wait([done, stop_wait], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
        except asyncio.CancelledError:
            self.stop()
            raise
        finally:
            stop_wait.cancel()
        if failure and not self.stopping:
            self.stats.connected = False
            raise failure[0]
        self.stop()

    def sleep(self, seconds: float) -> bool:
        """Interruptible pause in the worker; False when a stop was asked for."""
        return not self._stop.wait(max(0.0, seconds))

    def mark_discontinuity(self) -> None:
        self._pending_discontinuity = True
        self.timeline.new_segment()

    def emit(self, image: np.ndarray | None, local_timestamp: float | None, video: Any = None) -> None:
        """Hand one frame to the pipeline (called from the worker thread): an RGB array, or a decoded
        ``av.VideoFrame`` that is converted only if the frame gets restored."""
        frame = Frame(
            image=image,
            timestamp=self.timeline.map(local_timestamp),
            wallclock=time.time(),
            seq=self._seq,
            discontinuity=self._pending_discontinuity,
            video=video,
        )
        if self._last_size is not None and frame.size != self._last_size:
            self.stats.size_changes += 1
            frame.discontinuity = True
            log.info("source %s: frame size changed %s -> %s", self.name, self._last_size, frame.size)
        self._last_size = frame.size
        self._pending_discontinuity = False
        if self.timeline.jumps != self.stats.timestamp_jumps:
            self.stats.timestamp_jumps = self.timeline.jumps
            log.debug("source %s: timestamps jumped; re-anchored after the previous frame", self.name)
        self._seq += 1
        self.stats.frames += 1
        if self._channel is not None:
            self._channel.put_threadsafe(frame)

    @abc.abstractmethod
    def _produce(self) -> None:
        """Worker-thread body: emit frames until ``stopping`` (or the source ends)."""


def _finish(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


class Pacer:
    """Releases frames at their presentation times in real time (for files and the demo)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self._start: float | None = None

    def wait(self, timestamp: float) -> bool:
        now = time.monotonic()
        if self._start is None or timestamp < 0:
            self._start = now - max(timestamp, 0.0)
        due = self._start + timestamp
        if due - now > 1.0 or now - due > 1.0:  # jump in timestamps or stalled: re-anchor
            self._start = now - timestamp
            return not self.source.stopping
        return self.source.sleep(due - now)

    def reset(self) -> None:
        self._start = None
