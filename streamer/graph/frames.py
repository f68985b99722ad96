"""What flows between the stages of a camera pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    """

    __slots__ = ("_image", "discontinuity", "level", "original", "restored", "seq", "timestamp", "video", "wallclock")

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
        self.video = video
        self.timestamp = timestamp
        self.wallclock = wallclock
        self.seq = seq
        self.discontinuity = discontinuity
        self.restored = restored
        self.original = original  # a restored frame's camera frame (for the raw and compare views)
        self.level = level  # the degradation ladder's level that restored it (None: not restored)

    @property
    def image(self) -> np.ndarray:
        if self._image is None:
            self._image = self.video.to_ndarray(format="rgb24")
        return self._image

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
