"""Sinks mux already-encoded access units with PyAV; blocking muxer calls run in a worker thread."""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import logging
from fractions import Fraction
from typing import Any

import av

from streamer.graph.frames import AccessUnit
from streamer.hub import StreamHub, Subscription
from streamer.sps import sps_frame_rate

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90000)
QUEUE_UNITS = 128
FALLBACK_RATE = Fraction(25)


def annexb(nals: list[bytes]) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + nal for nal in nals)


class H264Muxer:
    """A PyAV output container carrying one H.264 stream of pre-encoded access units (blocking)."""

    def __init__(self, target: str, format_name: str | None, options: dict[str, str], first: AccessUnit) -> None:
        if first.parameter_sets is None:
            raise ValueError("a muxer must start on a keyframe with SPS/PPS")
        self.container: Any = av.open(target, "w", format=format_name, options=options)
        # The container's frame rate (Matroska's default duration, what players and ffprobe report) is the
        # one the encoder declares in the SPS; the packets carry their real timestamps besides.
        self.rate = sps_frame_rate(first.parameter_sets[0]) or FALLBACK_RATE
        self.stream: Any = self.container.add_stream("h264", rate=self.rate)
        self.stream.width = first.width
        self.stream.height = first.height
        self.stream.time_base = TIME_BASE
        self.stream.codec_context.extradata = annexb(list(first.parameter_sets))
        self.size = (first.width, first.height)
        self._origin = first.timestamp
        self._last_pts = -1
        self.units = 0

    def write(self, unit: AccessUnit) -> None:
        pts = round((unit.timestamp - self._origin) * 90000)
        if pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        packet = av.Packet(annexb(unit.nals))
        packet.stream = self.stream
        packet.pts = packet.dts = pts
        packet.time_base = TIME_BASE
        packet.is_keyframe = unit.keyframe
        self.container.mux(packet)
        self.units += 1

    def close(self) -> None:
        try:
            self.container.close()
        except Exception as error:  # closing a broken network muxer may fail too
            log.debug("muxer close failed: %s", error)


class Sink(abc.ABC):
    """Reads the stream hub through its own bounded subscription; ``stop`` is idempotent."""

    kind = "sink"

    def __init__(self, hub: StreamHub, reader_name: str) -> None:
        self.hub = hub
        self.subscription: Subscription = hub.subscribe(QUEUE_UNITS, name=reader_name)
        self.errors = 0
        self.units_written = 0
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"{self.kind}-{hub.name}")
        self._stopping = False

    @property
    def dropped(self) -> int:
        return self.subscription.dropped

    def stop(self) -> None:
        self._stopping = True
        self.subscription.close()

    def resync(self) -> None:
        """After a failure, before the supervisor restarts ``run``: start again at the next keyframe."""
        self.subscription.resync()

    def close(self) -> None:
        """Release the worker thread once ``run`` has finished for good."""
        self._executor.shutdown(wait=False)

    async def blocking(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    @abc.abstractmethod
    async def run(self) -> None: ...

    def describe(self) -> str:
        return self.kind
