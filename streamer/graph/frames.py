"""What flows between the stages of a camera pipeline."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np


class Frame:
    """A decoded frame.

    It holds an RGB array (H x W x 3 uint8), or the decoder's own ``av.VideoFrame`` (``video``) from which
    the RGB array is made only when someone asks for ``image`` — so a stream that is not restored is
    never converted to RGB and back. ``timestamp`` is the presentation time in seconds on a timeline that
    only moves forward for the life of the pipeline (sources re-anchor it after a reconnect);
    ``wallclock`` is ``time.time()`` when the frame was captured or decoded; ``discontinuity`` marks the
    first frame after a gap that temporal filtering must not bridge (reconnect, resolution change);
    ``original`` is, on a restored frame, the camera's frame it was made from.

    Several threads read one frame (the engine's worker, the taps' sender, the encoder): the decoder's
    frame is converted under the frame's lock, because PyAV keeps one scaler (SwsContext) per
    ``av.VideoFrame`` and runs it without the GIL — two conversions of the same frame at once crashed the
    process or hung it.
    """

    __slots__ = ("_image", "_lock", "discontinuity", "level", "level_switch", "original", "restored", "seq", "timestamp",
                 "video", "wallclock")

    def __init__(
        self,
        image: np.ndarray | None,
        timestamp: float,
        wallclock: float,
        seq: int,
        discontinuity: bool = False,
        restored: bool = False,
        video: Any = None,
        original: Frame | None = None,
        level: str | None = None,
    ) -> None:
        if image is None and video is None:
            raise ValueError("a frame needs an image or a decoded video frame")
        self._image = image
        self._lock = threading.Lock()
        self.video = video
        self.timestamp = timestamp
        self.wallclock = wallclock
        self.seq = seq
        self.discontinuity = discontinuity
        self.restored = restored
        self.original = original  # a restored frame's camera frame (for the raw and compare views)
        self.level = level  # the degradation ladder's level that restored it (None: not restored)
        self.level_switch = False  # the first frame restored at a new level: the encoder makes it an IDR

    @property
    def image(self) -> np.ndarray:
        image = self._image
        if image is None:
            with self._lock:
                if self._image is None:
                    self._image = self.video.to_ndarray(format="rgb24")
                image = self._image
        return image

    def scaled(self, width: int, height: int) -> np.ndarray:
        """The frame as RGB at ``width`` x ``height``, scaled from the decoder's frame where there is one
        (no full-size RGB conversion first)."""
        if self.video is None:
            return np.asarray(av.VideoFrame.from_ndarray(self.image, format="rgb24")
                              .reformat(width=width, height=height).to_ndarray())
        with self._lock:
            return np.asarray(self.video.reformat(width=width, height=height, format="rgb24").to_ndarray())

    def resized_video(self, width: int, height: int, interpolation: str = "BICUBIC") -> Any:
        """The decoder's frame resized to ``width`` x ``height`` in its own pixel format (under the lock)."""
        with self._lock:
            return self.video.reformat(width=width, height=height, interpolation=interpolation)

    def yuv(self, width: int, height: int, pix_fmt: str, planes: Callable[[Any], bytes]) -> bytes:
        """``planes`` of the frame as ``pix_fmt`` (an FFmpeg name) at ``width`` x ``height``: the decoder's own
        frame when it already is that (no conversion), else converted under the frame's lock."""
        if self.video is None:
            source = av.VideoFrame.from_ndarray(self.image, format="rgb24")
            return planes(source.reformat(width=width, height=height, format=pix_fmt))
        with self._lock:
            video = self.video
            if (video.width, video.height, video.format.name) != (width, height, pix_fmt):
                video = video.reformat(width=width, height=height, format=pix_fmt)
            return planes(video)

    @property
    def size(self) -> tuple[int, int]:
        if self._image is None:
            return int(self.video.width), int(self.video.height)
        return int(self._image.shape[1]), int(self._image.shape[0])


@dataclass(slots=True)
class AccessUnit:
    """One encoded H.264 picture, as Annex-B NAL units without start codes."""

    nals: list[bytes]
    timestamp: float
    wallclock: float
    keyframe: bool
    width: int
    height: int
    seq: int
    parameter_sets: tuple[bytes, bytes] | None = field(default=None)

    @property
    def nbytes(self) -> int:
        return sum(len(nal) for nal in self.nals)
