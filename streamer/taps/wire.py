"""The tap wire format, version 1: multipart ``[topic, header, payload]``.

- topic: ``"<stream>/<tap>"`` in UTF-8 (``tap`` is ``raw`` or ``restored``), so a SUB socket can
  subscribe to one camera (``"gate/"``) or one tap of it (``"gate/restored"``).
- header: UTF-8 JSON object, see ``TapHeader`` (``version`` first so a reader can refuse what it
  does not know).
- payload: ``rgb24`` = height x width x 3 bytes, row-major; ``jpeg`` = a baseline JPEG picture;
  ``i420`` = the Y plane (width x height bytes), then U, then V (each width/2 x height/2); ``nv12`` = the Y
  plane, then one plane of interleaved U, V pairs (width x height/2 bytes). Both YUV layouts have even
  sizes and no row padding: ``height * 3 // 2`` rows of ``width`` bytes, the layout OpenCV's
  ``COLOR_YUV2RGB_I420`` / ``COLOR_YUV2RGB_NV12`` take.

A reader ignores header fields it does not know (fields may be added within a version, never removed or
changed in meaning).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from fractions import Fraction

import av
import numpy as np

WIRE_VERSION = 1
TIME_BASE = Fraction(1, 90000)  # pts unit, as in RTP video


class WireError(ValueError):
    """A message that is not a tap message of a version this code reads."""


@dataclass(frozen=True, slots=True)
class TapHeader:
    version: int
    stream: str
    tap: str
    seq: int  # per topic, from 0, +1 per message sent: a gap is a drop
    pts: int  # presentation time in time_base units (the pipeline's monotonic timeline)
    time_base: tuple[int, int]  # (numerator, denominator)
    wallclock: float  # capture time, Unix seconds
    width: int
    height: int
    pix_fmt: str  # rgb24 | jpeg | i420 | nv12
    restored: bool  # the frame went through the model
    model: str | None  # the engine/model that restored it (None when not restored)
    level: str | None = None  # the degradation ladder's level that restored it (None when not restored)

    @property
    def topic(self) -> str:
        return f"{self.stream}/{self.tap}"

    @property
    def seconds(self) -> float:
        return self.pts * self.time_base[0] / self.time_base[1]

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> TapHeader:
        try:
            fields = json.loads(data)
            if fields.get("version") != WIRE_VERSION:
                raise WireError(f"tap wire version {fields.get('version')!r}, this client reads {WIRE_VERSION}")
            fields["time_base"] = tuple(fields["time_base"])
            return cls(**{name: fields[name] for name in cls.__dataclass_fields__ if name in fields})  # a missing
            # field with a default (added within the version) takes it; a missing required one is a TypeError
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            if isinstance(error, WireError):
                raise
            raise WireError(f"bad tap header: {error}") from None


YUV_FORMATS = {"i420": "yuv420p", "nv12": "nv12"}  # wire name -> FFmpeg's


def decode_payload(header: TapHeader, payload: bytes) -> np.ndarray:
    """The payload as an array: H x W x 3 RGB for rgb24 and jpeg, (H * 3/2) x W planes for i420 and nv12."""
    if header.pix_fmt == "rgb24":
        expected = header.width * header.height * 3
        if len(payload) != expected:
            raise WireError(f"rgb24 payload of {len(payload)} bytes, expected {expected}")
        return np.frombuffer(payload, np.uint8).reshape(header.height, header.width, 3)
    if header.pix_fmt in YUV_FORMATS:
        expected = header.width * header.height * 3 // 2
        if header.width % 2 or header.height % 2 or len(payload) != expected:
            raise WireError(f"{header.pix_fmt} payload of {len(payload)} bytes for {header.width}x{header.height}, "
                            f"expected {expected} (even sizes)")
        return np.frombuffer(payload, np.uint8).reshape(header.height * 3 // 2, header.width)
    if header.pix_fmt == "jpeg":
        return JpegCodec.decode(payload)
    raise WireError(f"unknown pixel format {header.pix_fmt!r}")


def yuv_bytes(frame: av.VideoFrame, pix_fmt: str) -> bytes:
    """An even-sized ``yuv420p`` or ``nv12`` frame's planes without row padding, in wire order."""
    width, height = frame.width, frame.height
    rows = [(height, width), (height // 2, width // 2), (height // 2, width // 2)]
    if pix_fmt == "nv12":
        rows = [(height, width), (height // 2, width)]
    parts = []
    for plane, (count, length) in zip(frame.planes, rows, strict=True):
        data = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
        parts.append(data[:count, :length].tobytes())
    return b"".join(parts)


def yuv_to_rgb(planes: np.ndarray, pix_fmt: str) -> np.ndarray:
    """RGB (H x W x 3) from an i420 or nv12 payload array, BT.601 limited range (FFmpeg's default)."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(planes), format=YUV_FORMATS[pix_fmt])
    return frame.to_ndarray(format="rgb24")


class JpegCodec:
    """JPEG through FFmpeg's mjpeg encoder (PyAV, already a dependency); one per sender, not thread-safe."""

    def __init__(self, quality: int) -> None:
        # FFmpeg's qscale runs 2 (best) .. 31 (worst); quality 100 -> 2, 1 -> 31.
        self.qscale = round(31 - (quality - 1) * 29 / 99)
        self._context: av.VideoCodecContext | None = None
        self._size = (0, 0)

    def encode(self, image: np.ndarray) -> bytes:
        height, width = image.shape[:2]
        if self._context is None or self._size != (width, height):
            context = av.CodecContext.create("mjpeg", "w")
            context.width, context.height = width, height
            context.pix_fmt = "yuvj420p"
            context.time_base = Fraction(1, 25)
            context.qmin = context.qmax = self.qscale
            context.open()
            self._context, self._size = context, (width, height)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format="yuvj420p")
        return b"".join(bytes(packet) for packet in self._context.encode(frame))

    @staticmethod
    def decode(data: bytes) -> np.ndarray:
        context = av.CodecContext.create("mjpeg", "r")
        frames = context.decode(av.Packet(data))
        if not frames:
            raise WireError("JPEG payload did not decode")
        return frames[0].to_ndarray(format="rgb24")
