"""Fan-out of one encoded stream to every reader, each with its own bounded ring buffer.

After MediaMTX ``stream/reader.go``: a slow reader drops (and counts) instead of blocking the writer or
the other readers. After a drop a reader skips to the next keyframe so its decoder never sees a hole.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from streamer.graph.frames import AccessUnit
from streamer.histogram import END_TO_END_BUCKETS_S, LatencyHistogram

# A reader that keeps overflowing asks for an IDR at most this often: a persistently slow viewer then costs
# the shared encoder (and every other viewer's bitrate) no more than a 2 s GOP would.
OVERFLOW_KEYFRAME_INTERVAL_S = 2.0


_READER_PROTOCOLS = (("rtsp-", "rtsp"), ("whep-", "webrtc"), ("publish-", "rtsp_publish"), ("file-", "file"))


def reader_protocol(reader: str) -> str:
    """The protocol a reader serves, from its subscription name (a bounded label: never the reader itself)."""
    return next((protocol for prefix, protocol in _READER_PROTOCOLS if reader.startswith(prefix)), "other")


class Subscription:
    def __init__(self, hub: StreamHub, maxsize: int, name: str) -> None:
        self.hub = hub
        self.name = name
        self.protocol = reader_protocol(name)  # once, not per delivered unit
        self.maxsize = maxsize
        self.dropped = 0
        self.delivered = 0
        self._units: deque[AccessUnit] = deque()
        self._need_keyframe = True
        self._event = asyncio.Event()
        self._closed = False
        self._last_overflow_request = -OVERFLOW_KEYFRAME_INTERVAL_S

    def offer(self, unit: AccessUnit) -> None:
        if self._closed:
            return
        if self._need_keyframe:
            if not unit.keyframe:
                return
            self._need_keyframe = False
        if len(self._units) >= self.maxsize:
            self.dropped += len(self._units) + 1
            self._units.clear()
            self._need_keyframe = not unit.keyframe
            if not unit.keyframe:
                now = time.monotonic()
                if now - self._last_overflow_request >= OVERFLOW_KEYFRAME_INTERVAL_S:
                    self._last_overflow_request = now
                    self.hub.request_keyframe()  # resume at an IDR now, not at the next GOP (rate-limited)
                self._event.set()
                return
        self._units.append(unit)
        self._event.set()

    def resync(self) -> None:
        """Forget what is queued and restart at the next keyframe (after the reader fell behind)."""
        self.dropped += len(self._units)
        self._units.clear()
        self._need_keyframe = True

    async def get(self) -> AccessUnit | None:
        """The next access unit, or None once closed."""
        while not self._units:
            if self._closed:
                return None
            self._event.clear()
            await self._event.wait()
        self.delivered += 1
        unit = self._units.popleft()
        self.hub.count_delivered(self.protocol, unit.nbytes)
        return unit

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._event.set()
            self.hub.unsubscribe(self)


class KeyframeGate:
    """Asks the stream's encoder for an IDR at most once per ``interval_s`` (instant start for new viewers).

    A request inside the interval is not lost: one IDR is scheduled for the end of the interval and every
    request until then shares it (coalesced). Runs on the event loop; ``force`` only sets a flag the
    encoder's thread reads at its next frame.
    """

    def __init__(self, force: Callable[[], None], interval_s: float) -> None:
        self.force = force
        self.interval_s = interval_s
        self.requests = 0  # asked for (viewers joining, PLI/FIR from WebRTC viewers)
        self.forced = 0  # IDRs asked of the encoder
        self.coalesced = 0  # requests answered by an IDR already asked for or scheduled
        self._last = -1e9
        self._pending: asyncio.TimerHandle | None = None

    def request(self) -> None:
        self.requests += 1
        if self._pending is not None:
            self.coalesced += 1
            return
        now = time.monotonic()
        wait = self._last + self.interval_s - now
        if wait <= 0:
            self._fire()
            return
        self.coalesced += 1
        self._pending = asyncio.get_running_loop().call_later(wait, self._fire)

    def _fire(self) -> None:
        self._pending = None
        self._last = time.monotonic()
        self.forced += 1
        self.force()

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None


class StreamHub:
    """One restored stream: the latest parameter sets and the readers that want its access units."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.parameter_sets: tuple[bytes, bytes] | None = None
        self.size: tuple[int, int] | None = None
        self.units_published = 0
        self.sender_restarts = 0  # viewer senders restarted after an unexpected failure (all viewers)
        self.last_timestamp: float | None = None
        self.last_published_at: float | None = None  # time.monotonic() of the last access unit
        self.fps_estimate = 0.0
        self.end_to_end = LatencyHistogram(END_TO_END_BUCKETS_S)  # capture wall clock → handed to viewers
        # H.264 bytes and access units handed to readers' senders, by protocol (reader_protocol)
        self.delivered_bytes: dict[str, int] = {"rtsp": 0, "webrtc": 0}
        self.delivered_units: dict[str, int] = {"rtsp": 0, "webrtc": 0}
        self.rtsp_wire_bytes = 0  # RTP and RTCP packets as RTSP viewers get them (interleaving headers included)
        self._subscriptions: list[Subscription] = []
        self._ready = asyncio.Event()
        self.keyframes: KeyframeGate | None = None  # set by the pipeline when its encoder takes IDR requests

    def request_keyframe(self) -> None:
        """A reader wants a picture now (it joined, or lost one): ask the encoder for an IDR, rate-limited."""
        if self.keyframes is not None:
            self.keyframes.request()

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions)

    def publish(self, unit: AccessUnit) -> None:
        if unit.parameter_sets is not None:
            self.parameter_sets = unit.parameter_sets
            self.size = (unit.width, unit.height)
            self._ready.set()
        if self.last_timestamp is not None and unit.timestamp > self.last_timestamp:
            instant = 1.0 / (unit.timestamp - self.last_timestamp)
            self.fps_estimate = instant if self.fps_estimate == 0 else 0.95 * self.fps_estimate + 0.05 * instant
        self.last_timestamp = unit.timestamp
        self.last_published_at = time.monotonic()
        self.units_published += 1
        self.end_to_end.observe(max(0.0, time.time() - unit.wallclock))
        for subscription in self._subscriptions:
            subscription.offer(unit)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the first keyframe (and so the SPS/PPS) has been published."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def count_delivered(self, protocol: str, nbytes: int) -> None:
        self.delivered_bytes[protocol] = self.delivered_bytes.get(protocol, 0) + nbytes
        self.delivered_units[protocol] = self.delivered_units.get(protocol, 0) + 1

    def subscribe(self, maxsize: int, name: str = "reader") -> Subscription:
        subscription = Subscription(self, maxsize, name)
        self._subscriptions.append(subscription)
        self.request_keyframe()  # instant start: the new reader need not wait for the next GOP
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def close(self) -> None:
        for subscription in list(self._subscriptions):
            subscription.close()
        if self.keyframes is not None:
            self.keyframes.close()
