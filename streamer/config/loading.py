"""The whole configuration, loaded from YAML with environment overrides; errors in plain words."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    model_validator,
)

from streamer.config.base import NAME_PATTERN, ConfigError, StrictModel
from streamer.config.camera import CameraConfig
from streamer.config.servers import ServerConfig

ENV_PREFIX = "STREAMER__"


class AppConfig(StrictModel):
    cameras: list[CameraConfig] = Field(
        max_length=64, description="Cameras to restore (may be empty: cameras can be added over the API)"
    )
    server: ServerConfig = Field(default_factory=ServerConfig, description="Servers")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Logging level")

    @model_validator(mode="after")
    def _unique_names(self) -> AppConfig:
        names = [camera.name for camera in self.cameras]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"camera names must be unique, repeated: {', '.join(duplicates)}")
        return self

    @model_validator(mode="after")
    def _shared_tap_sockets_agree(self) -> AppConfig:
        """Cameras on one tap endpoint share its socket, so they must agree on how it is opened."""
        sockets: dict[str, tuple[str, bool, int]] = {}
        for camera in self.cameras:
            taps = camera.taps
            if not taps.enabled:
                continue
            shape = (taps.pattern, taps.bind, taps.send_hwm)
            if sockets.setdefault(taps.endpoint, shape) != shape:
                raise ValueError(f"cameras sharing the tap endpoint {taps.endpoint} must have the same "
                                 "taps.pattern, taps.bind and taps.send_hwm")
        return self




# --------------------------------------------------------------------------------------------- loading
PATTERN_MEANINGS = {
    NAME_PATTERN: "must be 1 to 64 characters: letters, digits, '_', '.' or '-', not starting with '.' or '-'",
}
TAGGED_UNIONS = {  # the field holding a union keyed on `type` -> the kinds it takes
    "source": ("rtsp", "demo", "file", "whip"),
    "sinks": ("file", "rtsp_publish"),
}


def field_path(location: tuple[Any, ...]) -> str:
    """Dotted path of a field, without the union tag pydantic inserts (``source.rtsp.url`` -> ``source.url``)."""
    parts: list[str] = []
    for index, part in enumerate(location):
        owner = location[index - 1] if index else None
        if isinstance(owner, int) and index >= 2:
            owner = location[index - 2]
        if isinstance(part, str) and isinstance(owner, str) and part in TAGGED_UNIONS.get(owner, ()):
            continue
        parts.append(str(part))
    return ".".join(parts) or "(top level)"


def plain_message(item: Any) -> str:
    """pydantic's message for one error, in words a user understands (no regexes, no discriminator jargon)."""
    kind, context = item["type"], item.get("ctx") or {}
    if kind == "union_tag_not_found":
        owner = next((part for part in reversed(item["loc"]) if isinstance(part, str)), "")
        kinds = " or ".join(repr(tag) for tag in TAGGED_UNIONS.get(owner, ()))
        return "missing 'type'" + (f": say which kind this is, {kinds}" if kinds else "")
    if kind == "union_tag_invalid":
        tag = context.get("discriminator", "type").strip("'")
        return f"{tag} {context.get('tag')!r} is not one of {context.get('expected_tags')}"
    if kind == "string_pattern_mismatch":
        return PATTERN_MEANINGS.get(context.get("pattern", ""), f"does not have the expected form ({context.get('pattern')})")
    if kind == "extra_forbidden":
        return "unknown field (misspelt, or not valid here)"
    if kind == "missing":
        return "required field is missing"
    message = str(item["msg"])
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        lines.append(f"  {field_path(tuple(item['loc']))}: {plain_message(item)}")
    return "invalid configuration:\n" + "\n".join(lines)


def apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Apply ``STREAMER__A__B__0__C=value`` variables onto the raw config mapping (values parsed as YAML)."""
    for key in sorted(environ):
        if not key.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in key[len(ENV_PREFIX) :].split("__") if part]
        if not path:
            continue
        value = yaml.safe_load(environ[key]) if environ[key] != "" else ""
        node: Any = data
        for index, part in enumerate(path):
            last = index == len(path) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"{key}: no list item {part!r} to override")
                slot: Any = int(part)
            else:
                slot = part
            if last:
                node[slot] = value
            else:
                if isinstance(node, dict) and slot not in node:
                    node[slot] = {}
                node = node[slot]
    return data


def build_config(data: Any, environ: Mapping[str, str] | None = None) -> AppConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("invalid configuration:\n  (top level): must be a mapping")
    data = apply_env_overrides(data, os.environ if environ is None else environ)
    try:
        return AppConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None


def read_config_data(path: str | Path) -> dict[str, Any]:
    """The YAML mapping of a configuration file, not yet validated."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("invalid configuration:\n  (top level): must be a mapping")
    return data


def load_config_file(path: str | Path, environ: Mapping[str, str] | None = None) -> AppConfig:
    return build_config(read_config_data(path), environ)


def source_from_argument(argument: str) -> dict[str, Any]:
    """Turn the ``streamer run SOURCE`` argument into a source mapping."""
    if argument == "demo":
        return {"type": "demo"}
    if re.match(r"^rtsps?://", argument):
        return {"type": "rtsp", "url": argument}
    return {"type": "file", "path": argument}
