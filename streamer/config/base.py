"""What every configuration model shares: strictness, the error type, names and URLs."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
)

from engines import EngineError, resolve_model

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$"


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names each bad field."""


def check_model(value: str | None) -> str | None:
    """An engine's ``model`` field: a shipped model's name or a file the engine can load (None = the default)."""
    if value is not None:
        try:
            resolve_model(value)
        except EngineError as error:
            raise ValueError(str(error)) from None
    return value


def check_rtsp_url(value: str) -> str:
    if not re.match(r"^rtsps?://[^/\s]+", value):
        raise ValueError("must look like rtsp://host[:port]/path")
    return value


RtspUrl = Annotated[str, AfterValidator(check_rtsp_url)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
