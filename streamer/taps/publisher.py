"""The publishing side of the taps: never blocks the pipeline.

``FrameTap.offer`` runs on the event loop: it decides (decimation, max fps) and appends a reference to
the frame to the tap's bounded queue — the oldest frame is dropped and counted when it is full (live
analytics want the freshest picture). Everything that costs CPU (RGB conversion, downscale, JPEG) and
the send happen in the sender thread of the tap's ``TapSocket``, which sends with ``zmq.NOBLOCK``; a
send refused at the high-water mark (``zmq.Again``: PUSH with no ready worker) is dropped and counted.
A PUB socket drops at its high-water mark inside ZeroMQ without telling the sender: subscribers see
those drops as gaps in ``seq``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

import av
import numpy as np
import zmq

from streamer.config import TapPointConfig, TapsConfig
from streamer.graph.frames import Frame
from streamer.taps.wire import TIME_BASE, WIRE_VERSION, YUV_FORMATS, JpegCodec, TapHeader, yuv_bytes

log = logging.getLogger(__name__)


class TapError(RuntimeError):
    """A tap socket that cannot be opened; the message names the config field."""


class FrameTap:
    """One tap point of one stream: decimation, a bounded queue, counters, message building."""

    def __init__(self, stream: str, config: TapPointConfig,
                 model: Callable[[str | None], str | None] = lambda level: None) -> None:
        self.stream = stream
        self.tap = config.point
        self.config = config
        self.model = model
        self.topic = f"{stream}/{config.point}".encode()
        self.messages = 0  # sent (written by the sender thread)
        self.send_dropped = 0  # refused by ZeroMQ at the high-water mark (sender thread)
        self.queue_dropped = 0  # pushed out of the full queue (event loop)
        self._queue: deque[tuple[int, Frame]] = deque()
        self._offered = 0
        self._seq = 0
        self._last_ts: float | None = None
        self._wake: Callable[[], None] = lambda: None
        self._lock = threading.Lock()
        self._jpeg = JpegCodec(config.quality) if config.format == "jpeg" else None

    @property
    def dropped(self) -> int:
        return self.queue_dropped + self.send_dropped

    def offer(self, frame: Frame) -> None:
        """Called for every frame at the tap point; O(1), never waits."""
        self._offered += 1
        if (self._offered - 1) % self.config.every_nth:
            return
        if self.config.max_fps is not None and self._last_ts is not None:
            if frame.timestamp - self._last_ts < 1.0 / self.config.max_fps - 1e-3:
                return
        self._last_ts = frame.timestamp
        with self._lock:
            if len(self._queue) >= self.config.queue:
                self._queue.popleft()
                self.queue_dropped += 1
            self._queue.append((self._seq, frame))
        self._seq += 1
        self._wake()

    def take(self) -> tuple[int, Frame] | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def message(self, seq: int, frame: Frame) -> list[bytes]:
        """The multipart message of a frame (sender thread: converts, scales, encodes)."""
        if self.config.format in YUV_FORMATS:
            width, height, payload = self._planes(frame)
        else:
            image = self._picture(frame)
            height, width = image.shape[:2]
            payload = self._jpeg.encode(image) if self._jpeg is not None else image.tobytes()
        header = TapHeader(
            version=WIRE_VERSION, stream=self.stream, tap=self.tap, seq=seq,
            pts=round(frame.timestamp / TIME_BASE), time_base=(TIME_BASE.numerator, TIME_BASE.denominator),
            wallclock=frame.wallclock, width=width, height=height, pix_fmt=self.config.format,
            restored=frame.restored, model=self.model(frame.level) if frame.restored else None, level=frame.level,
        )
        return [self.topic, header.encode(), payload]

    def _target_size(self, frame: Frame) -> tuple[int, int] | None:
        """The downscaled size, or None to keep the frame's."""
        target = self.config.width
        width, height = frame.size
        if target is None or target >= width:
            return None
        return target, max(2, round(height * target / width / 2) * 2)

    def _picture(self, frame: Frame) -> np.ndarray:
        size = self._target_size(frame)
        if size is None:
            return frame.image
        return frame.scaled(*size)

    def _planes(self, frame: Frame) -> tuple[int, int, bytes]:
        """i420 / nv12: the decoder's own planes when they already are that (raw tap, no downscale), else
        converted (and scaled) by swscale; odd sizes lose their last row or column."""
        width, height = self._target_size(frame) or frame.size
        width, height = width - width % 2, height - height % 2
        fmt = self.config.format
        return width, height, frame.yuv(width, height, YUV_FORMATS[fmt], lambda video: yuv_bytes(video, fmt))


class TapSocket:
    """One ZeroMQ socket (PUB or PUSH, bound or connected) and the thread that sends for its taps.

    Several streams may share it (their topics differ). ``stop`` is idempotent.
    """

    def __init__(self, config: TapsConfig, context: zmq.Context[zmq.Socket[bytes]] | None = None) -> None:
        self.endpoint = config.endpoint
        self.taps: list[FrameTap] = []
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.PUB if config.pattern == "pub" else zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, config.send_hwm)
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            if config.bind:
                self._socket.bind(config.endpoint)
            else:
                self._socket.connect(config.endpoint)
        except zmq.ZMQError as error:
            self._socket.close(linger=0)
            action = "bind" if config.bind else "connect"
            raise TapError(f"taps.endpoint={config.endpoint}: cannot {action}: {error}") from None
        self._ready = threading.Condition()
        self._pending = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"taps-{config.endpoint}", daemon=True)
        self._thread.start()

    def add(self, tap: FrameTap) -> FrameTap:
        tap._wake = self._notify
        self.taps.append(tap)
        return tap

    def _notify(self) -> None:
        with self._ready:
            self._pending = True
            self._ready.notify()

    def _run(self) -> None:
        try:
            while True:
                with self._ready:
                    while not self._pending and not self._stopped:
                        self._ready.wait()
                    if self._stopped:
                        return
                    self._pending = False
                self._drain()
        finally:
            self._socket.close(linger=0)

    def _drain(self) -> None:
        """Send everything queued, one message per tap in turn, so no tap starves another."""
        busy = True
        while busy and not self._stopped:
            busy = False
            for tap in list(self.taps):
                item = tap.take()
                if item is None:
                    continue
                busy = True
                self._send(tap, *item)

    def _send(self, tap: FrameTap, seq: int, frame: Frame) -> None:
        try:
            parts = tap.message(seq, frame)
        except (av.error.FFmpegError, ValueError) as error:  # a frame that cannot be converted: drop it
            tap.send_dropped += 1
            log.warning("tap %s: frame %d not published: %s", tap.topic.decode(), frame.seq, error)
            return
        try:
            self._socket.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            tap.send_dropped += 1
            return
        tap.messages += 1

    def stop(self, timeout_s: float = 2.0) -> None:
        with self._ready:
            if self._stopped:
                return
            self._stopped = True
            self._ready.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)


class TapSockets:
    """Every tap socket of the service, one per endpoint, shared by the streams that name it."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]] | None = None) -> None:
        self._context = context
        self.sockets: dict[str, TapSocket] = {}
        self._stopped = False

    def taps_for(self, stream: str, config: TapsConfig,
                 model: Callable[[str | None], str | None]) -> dict[str, FrameTap]:
        """The stream's taps by point name, on the socket of its endpoint (opened on first use)."""
        if not config.enabled:
            return {}
        socket = self.sockets.get(config.endpoint)
        if socket is None:
            socket = self.sockets[config.endpoint] = TapSocket(config, self._context)
            log.info("frame taps: %s %s on %s", config.pattern.upper(), "bound" if config.bind else "connected",
                     config.endpoint)
        return {point.point: socket.add(FrameTap(stream, point, model)) for point in config.points}

    def release(self, taps: Iterable[FrameTap]) -> None:
        """A removed camera's taps leave their sockets (a socket stays open for the cameras that share it)."""
        for tap in list(taps):
            for socket in self.sockets.values():
                if tap in socket.taps:
                    socket.taps.remove(tap)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for socket in self.sockets.values():
            socket.stop()


def wait_until(condition: Callable[[], bool], timeout_s: float, step_s: float = 0.005) -> bool:
    """Poll ``condition`` until true or the deadline (for tools and tests)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step_s)
    return True
