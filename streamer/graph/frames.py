"""What flows between the stages of a camera pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class Frame:
    """A decoded RGB frame.

    ``timestamp`` is the frame's presentation time in seconds on a timeline that only moves forward for
    the life of the pipeline (sources re-anchor it after a reconnect); ``wallclock`` is ``time.time()``
    when the frame was captured or decoded; ``discontinuity`` marks the first frame after a gap that
    temporal filtering must not bridge (reconnect, resolution change).
    """

    image: np.ndarray  # H x W x 3 uint8, RGB
    timestamp: float
    wallclock: float
    seq: int
    discontinuity: bool = False
    restored: bool = False

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])


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
