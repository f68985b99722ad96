"""ZeroMQ frame taps of one camera: where frames are published, which tap points, in what shape."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from streamer.config.base import StrictModel

DEFAULT_TAP_ENDPOINT = "tcp://127.0.0.1:5555"


class TapPointConfig(StrictModel):
    point: Literal["raw", "restored"] = Field(
        description="raw = the decoded camera frame, before the temporal window; restored = the frame handed "
        "to the encoder"
    )
    format: Literal["rgb24", "i420", "nv12", "jpeg"] = Field(
        "rgb24",
        description="Payload: rgb24 bytes, i420 or nv12 planes (raw: the decoder's own when it decodes to that, "
        "no conversion), or a JPEG picture",
    )
    quality: int = Field(85, ge=1, le=100, description="JPEG quality (format: jpeg)")
    every_nth: int = Field(1, ge=1, le=1000, description="Decimation: publish one frame in every_nth")
    max_fps: float | None = Field(None, gt=0, le=240, description="Publish at most this many frames a second")
    width: int | None = Field(
        None, ge=16, le=7680, multiple_of=2,
        description="Downscale to this width (height follows the aspect ratio, even); default: as is",
    )
    queue: int = Field(
        4, ge=1, le=256,
        description="Frames held for the sender thread; when full the oldest is dropped (counted)",
    )


def _default_points() -> list[TapPointConfig]:
    return [TapPointConfig(point="raw"), TapPointConfig(point="restored")]


class TapsConfig(StrictModel):
    enabled: bool = Field(False, description="Publish this camera's frames over ZeroMQ")
    endpoint: str = Field(
        DEFAULT_TAP_ENDPOINT,
        description="tcp://host:port or ipc:///path; cameras with the same endpoint share one socket "
        "(topics '<camera>/<tap>' tell them apart)",
    )
    pattern: Literal["pub", "push"] = Field(
        "pub", description="pub = broadcast (slow subscribers drop); push = load-balanced to connected workers"
    )
    bind: bool = Field(True, description="Bind the endpoint (true) or connect to it (false)")
    send_hwm: int = Field(
        16, ge=1, le=100000, description="ZeroMQ send high-water mark (messages queued per peer before dropping)"
    )
    points: list[TapPointConfig] = Field(
        default_factory=_default_points, min_length=1, max_length=2, description="Tap points and their options"
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint_shape(cls, value: str) -> str:
        if not re.match(r"^(tcp://[^/\s]+:\d{1,5}|ipc://\S+)$", value):
            raise ValueError("must look like tcp://host:port or ipc:///path")
        return value

    @model_validator(mode="after")
    def _points_unique(self) -> TapsConfig:
        names = [point.point for point in self.points]
        if len(set(names)) != len(names):
            raise ValueError("each tap point (raw, restored) may appear once")
        return self
