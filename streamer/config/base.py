"""What every configuration model shares: strictness, the error type, names and URLs."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
)

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$"


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names each bad field."""


def check_rtsp_url(value: str) -> str:
    if not re.match(r"^rtsps?://[^/\s]+", value):
        raise ValueError("must look like rtsp://host[:port]/path")
    return value


RtspUrl = Annotated[str, AfterValidator(check_rtsp_url)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
