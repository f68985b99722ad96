"""Encode once per output stream: H.264 (libx264, zero latency, no B-frames, SPS/PPS in-band)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from streamer.config import EncoderConfig
from streamer.framerate import FrameRateMeter, nice_rate
from streamer.graph.channel import Channel, ChannelClosed
from streamer.graph.frames import AccessUnit, Frame

log = logging.getLogger(__name__)

NAL_SPS = 7
NAL_PPS = 8
NAL_IDR = 5


def split_annexb(buffer: bytes) -> list[bytes]:
    """Split an Annex-B byte stream into NAL units (start codes removed)."""
    nals = []
    index = buffer.find(b"\x00\x00\x01")
    while index != -1:
        start = index + 3
        end = buffer.find(b"\x00\x00\x01", start)
        nal = buffer[start:] if end == -1 else buffer[start:end]
        nal = nal.rstrip(b"\x00") if end != -1 else nal
        if nal:
            nals.append(nal)
        index = end
    return nals


def parameter_sets(nals: list[bytes]) -> tuple[bytes, bytes] | None:
    sps = next((nal for nal in nals if nal[0] & 0x1F == NAL_SPS), None)
    pps = next((nal for nal in nals if nal[0] & 0x1F == NAL_PPS), None)
    return (sps, pps) if sps and pps else None


@dataclass
class EncoderStats:
    frames: int = 0
    bytes: int = 0
    keyframes: int = 0
    reinits: int = 0
    requested_keyframes: int = 0  # IDRs made on request (a viewer joined or lost a picture)


class H264Encoder:
    """Blocking encoder (call from one worker thread): RGB frames in, access units out.

    The encoder runs at the stream's real frame rate, which sets both libx264's bit budget per frame
    (bitrate / rate: a 10 fps stream encoded as 25 fps gets 40 % of its target) and the SPS's VUI timing
    that viewers and recorders read. It opens with the best rate known then (measured from the frames'
    timestamps once a few have arrived, else the source's declared ``rate_hint()``, else ``fps_hint``),
    keeps measuring, and re-opens with a new rate when the measurement moves by more than
    ``RATE_CHANGE``: at the next keyframe (a new SPS starts there anyway), or at once while the rate it
    opened with was only a guess.
    """

    RATE_CHANGE = 0.12

    def __init__(self, config: EncoderConfig, fps_hint: float = 25.0) -> None:
        self.config = config
        self.fps_hint = fps_hint
        self.rate_hint: Callable[[], float | None] | None = None
        self.meter = FrameRateMeter()
        self.rate: Fraction | None = None  # the rate the open encoder runs at
        self.stats = EncoderStats()
        self._context: Any = None
        self._size: tuple[int, int] | None = None
        self._rate_guessed = True
        self._next_pts = 0
        self._last_key_ts: float | None = None
        self._meta: dict[int, Frame] = {}
        self._keyframe_requested = False

    def request_keyframe(self) -> None:
        """Make the next frame an IDR (thread-safe: a flag the encoding thread reads and clears)."""
        self._keyframe_requested = True

    def _best_rate(self) -> Fraction:
        measured = self.meter.rate()
        self._rate_guessed = measured is None
        if measured is not None:
            return measured
        declared = self.rate_hint() if self.rate_hint is not None else None
        return nice_rate(declared if declared and declared > 0 else self.fps_hint)

    def _rate_moved(self, keyframe_due: bool) -> bool:
        measured = self.meter.rate()
        if measured is None or self.rate is None or not (keyframe_due or self._rate_guessed):
            return False
        if abs(measured / self.rate - 1) <= self.RATE_CHANGE:
            self._rate_guessed = False
            return False
        log.info("encoder: frame rate %.3f -> %.3f fps (measured)", self.rate, measured)
        return True

    def _open(self, width: int, height: int) -> None:
        if self._context is not None:
            self.stats.reinits += 1
        self.rate = self._best_rate()
        context: Any = av.CodecContext.create("libx264", "w")
        context.width = width
        context.height = height
        context.pix_fmt = "yuv420p"
        context.time_base = Fraction(1, 90000)
        context.framerate = self.rate
        context.bit_rate = self.config.bitrate_kbps * 1000
        context.thread_count = self.config.threads
        kbps = self.config.bitrate_kbps
        context.options = {
            "preset": self.config.preset,
            "tune": "zerolatency",
            "profile": self.config.profile,
            "x264-params": (
                "keyint=infinite:min-keyint=1:scenecut=0:bframes=0:repeat-headers=1:forced-idr=1:"
                f"vbv-maxrate={kbps}:vbv-bufsize={kbps}:annexb=1:aud=0"
            ),
        }
        context.open()
        self._context = context
        self._size = (width, height)
        self._last_key_ts = None

    def _video_frame(self, frame: Frame) -> Any:
        """The frame as PyAV wants it: the decoder's own frame where it was not restored (no RGB round trip)."""
        if frame.video is not None and not frame.restored and frame.video.width % 2 == 0 and frame.video.height % 2 == 0:
            return frame.video
        image = frame.image
        height, width = image.shape[:2]
        if width % 2 or height % 2:
            image = image[: height - height % 2, : width - width % 2]
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")

    def encode(self, frame: Frame) -> list[AccessUnit]:
        self.meter.add(frame.timestamp, frame.discontinuity)
        video = self._video_frame(frame)
        width, height = video.width, video.height
        keyframe_due = self._last_key_ts is None or frame.timestamp - self._last_key_ts >= self.config.gop_s - 1e-3
        if self._keyframe_requested:
            self._keyframe_requested = False
            keyframe_due = True
            self.stats.requested_keyframes += 1
        units: list[AccessUnit] = []
        if self._size != (width, height) or self._rate_moved(keyframe_due):
            if self._context is not None:
                units = self._flush_context()
            self._open(width, height)
        video.pts = self._next_pts
        self._next_pts += 1
        if self._last_key_ts is None or keyframe_due:
            video.pict_type = av.video.frame.PictureType.I
            self._last_key_ts = frame.timestamp
        else:
            video.pict_type = av.video.frame.PictureType.NONE
        self._meta[int(video.pts)] = frame
        return units + self._collect(self._context.encode(video))

    def _collect(self, packets: list[Any]) -> list[AccessUnit]:
        units = []
        for packet in packets:
            source = self._meta.pop(int(packet.pts), None)
            if source is None:
                continue
            nals = split_annexb(bytes(packet))
            keyframe = any(nal[0] & 0x1F == NAL_IDR for nal in nals)
            width, height = self._size or (0, 0)
            unit = AccessUnit(
                nals=nals,
                timestamp=source.timestamp,
                wallclock=source.wallclock,
                keyframe=keyframe,
                width=width,
                height=height,
                seq=source.seq,
                parameter_sets=parameter_sets(nals),
            )
            self.stats.frames += 1
            self.stats.bytes += unit.nbytes
            self.stats.keyframes += int(keyframe)
            units.append(unit)
        return units

    def _flush_context(self) -> list[AccessUnit]:
        try:
            return self._collect(self._context.encode(None))
        except av.error.EOFError:
            return []

    def close(self) -> list[AccessUnit]:
        units = self._flush_context() if self._context is not None else []
        self._context = None
        return units

    def reset(self) -> None:
        """Drop the context without flushing it (it may be broken); the next frame opens a new one,
        starting with a keyframe."""
        self._context = None
        self._size = None
        self._meta.clear()


class EncoderStuck(RuntimeError):
    """The encoder failed on many frames in a row: its context is replaced (by the stage's supervisor)."""


class EncodeStage:
    """Restored frames in, access units out to ``publish``; encoding runs in a worker thread.

    A frame the encoder refuses is skipped and counted; ``MAX_CONSECUTIVE_ERRORS`` refusals in a row
    raise ``EncoderStuck`` so the supervisor restarts the stage with a fresh encoder (``reset``). The hub
    behind ``publish`` stays open across restarts: viewers see a new keyframe with SPS/PPS and go on.
    """

    MAX_CONSECUTIVE_ERRORS = 25

    def __init__(
        self,
        encoder: H264Encoder,
        inbox: Channel[Frame],
        publish: Callable[[AccessUnit], None],
    ) -> None:
        self.encoder = encoder
        self.inbox = inbox
        self.publish = publish
        self.taps: list[Callable[[Frame], None]] = []  # see every frame before it is encoded (extra views)
        # applied in order to every frame on the worker thread before the taps and the encoder see it (exposure,
        # then an upscaling model's output size)
        self.corrections: list[Callable[[Frame], Frame]] = []
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"encode-{inbox.name}")
        self.errors = 0
        self.level_switch_keyframes = 0  # IDRs made where the ladder changed level
        self._consecutive_errors = 0
        self._last_error_log = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await self.inbox.get()
            except ChannelClosed:
                break
            if self.corrections:
                frame = await loop.run_in_executor(self._executor, self._corrected, frame)
            for tap in self.taps:
                tap(frame)
            if frame.level_switch:  # the ladder changed level: the frame starts a new GOP (see RestoreStage)
                self.encoder.request_keyframe()
                self.level_switch_keyframes += 1
            try:
                units = await loop.run_in_executor(self._executor, self.encoder.encode, frame)
            except (av.error.FFmpegError, ValueError) as error:
                self._refused(frame, error)
                continue
            self._consecutive_errors = 0
            for unit in units:
                self.publish(unit)
        for unit in await loop.run_in_executor(self._executor, self.encoder.close):
            self.publish(unit)

    def _corrected(self, frame: Frame) -> Frame:
        for correction in self.corrections:
            frame = correction(frame)
        return frame

    def _refused(self, frame: Frame, error: Exception) -> None:
        self.errors += 1
        self._consecutive_errors += 1
        now = time.monotonic()
        if now - self._last_error_log >= 1.0:  # one line a second at most
            log.error("encoder failed on frame %d (%d error(s) so far): %s", frame.seq, self.errors, error)
            self._last_error_log = now
        if self._consecutive_errors >= self.MAX_CONSECUTIVE_ERRORS:
            self._consecutive_errors = 0
            raise EncoderStuck(f"{self.MAX_CONSECUTIVE_ERRORS} frames in a row failed to encode: {error}")

    def reset(self) -> None:
        """A fresh encoder context for the next frame (after a failure; the old one may be broken)."""
        self.encoder.reset()

    def stop(self) -> None:
        self.inbox.close()

    def close(self) -> None:
        self._executor.shutdown(wait=False)
