"""A WebRTC video track that hands aiortc our already-encoded H.264 access units (encode once).

aiortc's ``RTCRtpSender`` calls ``recv()``; an ``av.Packet`` it gets back is packetised as is
(``H264Encoder.pack``: Annex-B split, STAP-A/FU-A), never re-encoded. The packet must be Annex-B, carry
SPS/PPS in-band before an IDR, and have ``pts`` and ``time_base`` set (aiortc derives the RTP timestamp
from them). Each viewer reads its own bounded hub ``Subscription``: a viewer that falls behind drops to the
next keyframe (counted in the subscription) instead of slowing the others.
"""

from __future__ import annotations

from fractions import Fraction

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from streamer.encoder import NAL_SPS
from streamer.graph.frames import AccessUnit
from streamer.hub import StreamHub, Subscription

START_CODE = b"\x00\x00\x00\x01"
VIDEO_CLOCK = Fraction(1, 90000)


def annexb_packet(unit: AccessUnit, parameter_sets: tuple[bytes, bytes] | None, pts: int) -> av.Packet:
    """The access unit as an Annex-B ``av.Packet``; an IDR without in-band SPS/PPS gets the latest ones."""
    nals = list(unit.nals)
    if unit.keyframe and parameter_sets is not None and not any(nal[0] & 0x1F == NAL_SPS for nal in nals):
        nals = [*parameter_sets, *nals]
    packet = av.Packet(b"".join(START_CODE + nal for nal in nals))
    packet.pts = pts
    packet.dts = pts
    packet.time_base = VIDEO_CLOCK
    return packet


class EncodedVideoTrack(MediaStreamTrack):
    """One viewer's video: the hub's access units, in order, with timestamps relative to the first one.

    The viewer subscribes to the hub at its first ``recv()``, which aiortc makes once the connection is up:
    nothing queues while ICE and DTLS run, and the IDR the new subscription asks for (instant start) is
    made for this viewer at that moment."""

    kind = "video"

    def __init__(self, hub: StreamHub, queue: int, name: str) -> None:
        super().__init__()
        self.hub = hub
        self.queue = queue
        self.name = name
        self.subscription: Subscription | None = None
        self.sent = 0
        self._origin: float | None = None
        self._last_pts = -1

    @property
    def dropped(self) -> int:
        return self.subscription.dropped if self.subscription is not None else 0

    async def recv(self) -> av.Packet:
        if self.subscription is None and self.readyState == "live":
            self.subscription = self.hub.subscribe(self.queue, self.name)
        unit = await self.subscription.get() if self.subscription is not None else None
        if unit is None or self.readyState != "live":
            self.stop()
            raise MediaStreamError("the stream ended")
        if self._origin is None:
            self._origin = unit.timestamp
        pts = max(round((unit.timestamp - self._origin) * 90000), self._last_pts + 1)  # never backwards
        self._last_pts = pts
        self.sent += 1
        return annexb_packet(unit, self.hub.parameter_sets, pts)

    def stop(self) -> None:
        super().stop()
        if self.subscription is not None:
            self.subscription.close()
