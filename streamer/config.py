"""Configuration: pydantic v2 models, loaded from YAML with environment overrides.

Every model forbids unknown keys, every field is described and bounded. A bad file is reported with the
dotted path of the field and the reason (see ``ConfigError``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from engines import EngineError, resolve_model

ENV_PREFIX = "STREAMER__"
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


# --------------------------------------------------------------------------------------------- sources
class RtspSourceConfig(StrictModel):
    type: Literal["rtsp"] = "rtsp"
    url: RtspUrl = Field(description="Camera URL, rtsp://[user:pass@]host[:port]/path (rtsps:// too)")
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTP transport asked of the camera")
    open_timeout_s: float = Field(5.0, ge=0.5, le=120, description="Give up connecting after this long")
    read_timeout_s: float = Field(5.0, ge=0.5, le=120, description="Reconnect when no packet arrives for this long")
    no_frames_timeout_s: float = Field(
        10.0, ge=1, le=600, description="Reconnect when packets arrive but no frame decodes for this long"
    )
    reconnect_backoff_s: list[float] = Field(
        [0.5, 1, 2, 5, 10],
        min_length=1,
        max_length=16,
        description="Pauses between reconnect attempts; the last one repeats",
    )
    reconnect_fast_s: float = Field(
        0.2,
        ge=0.05,
        le=5,
        description="Pause between reconnect attempts in the first reconnect_fast_for_s seconds after a camera is lost",
    )
    reconnect_fast_for_s: float = Field(
        5.0,
        ge=0,
        le=60,
        description="How long a lost camera is retried every reconnect_fast_s before reconnect_backoff_s applies",
    )

    @field_validator("reconnect_backoff_s")
    @classmethod
    def _check_backoff(cls, value: list[float]) -> list[float]:
        if any(not 0 <= step <= 300 for step in value):
            raise ValueError("each pause must be between 0 and 300 s")
        return value


class DemoSourceConfig(StrictModel):
    type: Literal["demo"] = "demo"
    width: int = Field(640, ge=64, le=3840, multiple_of=2, description="Frame width in pixels")
    height: int = Field(360, ge=64, le=2160, multiple_of=2, description="Frame height in pixels")
    fps: float = Field(25.0, gt=0, le=120, description="Frames per second, paced in real time")
    noise_sigma: float = Field(18.0, ge=0, le=80, description="Sensor noise level (0-255 scale)")
    bitrate_kbps: int = Field(1200, ge=50, le=50000, description="Peak bitrate of the camera's own H.264 encode")
    seed: int = Field(0, ge=0, description="Seed of the synthetic scene")
    timestamp_strip: bool = Field(True, description="Embed a wallclock barcode for latency measurement")


class FileSourceConfig(StrictModel):
    type: Literal["file"] = "file"
    path: str = Field(description="A video file, played at its own frame rate")
    loop: bool = Field(True, description="Start again at the end")


SourceConfig = Annotated[
    RtspSourceConfig | DemoSourceConfig | FileSourceConfig, Field(discriminator="type")
]


# --------------------------------------------------------------------------------------------- engine
class EngineConfig(StrictModel):
    type: Literal["auto", "cpu", "tensorrt", "cuda", "passthrough"] = Field(
        "auto", description="auto = TensorRT when a GPU is usable, else ONNX Runtime on the CPU; cuda = PyTorch CUDA"
    )
    model: str | None = Field(
        None,
        description="A shipped model's name ('lite', 'lite-causal' = lowest latency, 'lite-fast') or an ONNX file; "
        "default: 'lite'",
    )
    threads: int = Field(0, ge=0, le=256, description="CPU inference threads (0 = all cores)")
    int8: bool = Field(
        True,
        description="CPU: run the model's int8 twin (NAME.int8.onnx beside NAME.onnx) when there is one",
    )
    fp16: bool = Field(True, description="TensorRT: build the engine in fp16")
    cache_dir: str = Field(
        "~/.cache/streamer/engines", description="TensorRT: where built engines are cached"
    )

    @field_validator("model")
    @classmethod
    def _model_exists_when_named(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                resolve_model(value)
            except EngineError as error:
                raise ValueError(str(error)) from None
        return value


class WindowConfig(StrictModel):
    size: int | None = Field(
        None, ge=1, le=15, description="Frames per temporal window (odd); default: the model's"
    )
    lookahead: int | None = Field(
        None, ge=0, le=14, description="Future frames waited for (0 = causal); default: the model's"
    )

    @field_validator("size")
    @classmethod
    def _odd(cls, value: int | None) -> int | None:
        if value is not None and value % 2 == 0:
            raise ValueError("must be odd")
        return value

    @model_validator(mode="after")
    def _lookahead_fits(self) -> WindowConfig:
        if self.size is not None and self.lookahead is not None and self.lookahead > self.size - 1:
            raise ValueError("lookahead must be smaller than size")
        return self


class EncoderConfig(StrictModel):
    bitrate_kbps: int = Field(2000, ge=100, le=100000, description="Target bitrate of the restored stream")
    gop_s: float = Field(1.0, gt=0, le=10, description="Keyframe interval in seconds")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = Field(
        "ultrafast", description="libx264 preset"
    )
    threads: int = Field(1, ge=0, le=64, description="Encoder threads (0 = auto)")


class RtspPublishSinkConfig(StrictModel):
    type: Literal["rtsp_publish"] = "rtsp_publish"
    url: RtspUrl = Field(description="rtsp://server:port/path to push the restored stream to (RTSP ANNOUNCE/RECORD)")
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTP transport for the push")
    reconnect_s: float = Field(2.0, ge=0.1, le=300, description="Pause before pushing again after a failure")


class FileSinkConfig(StrictModel):
    type: Literal["file"] = "file"
    path: str = Field(description="Output file; .mkv stays playable even after a crash, .mp4 on clean exit")


SinkConfig = Annotated[RtspPublishSinkConfig | FileSinkConfig, Field(discriminator="type")]


class CameraConfig(StrictModel):
    name: str = Field(
        "restored", pattern=NAME_PATTERN, description="Path of the restored stream: rtsp://host:port/<name>"
    )
    source: SourceConfig
    window: WindowConfig = Field(default_factory=WindowConfig, description="Temporal window")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Restoration engine")
    encoder: EncoderConfig = Field(default_factory=EncoderConfig, description="H.264 encoder")
    sinks: list[SinkConfig] = Field(default_factory=list, max_length=16, description="Extra outputs")
    queue_frames: int = Field(8, ge=1, le=256, description="Bound of each frame queue between stages")
    stall_timeout_s: float = Field(
        5.0, ge=0.5, le=600, description="Not ready (/readyz 503) when no output frame was produced for this long"
    )


# --------------------------------------------------------------------------------------------- servers
class RtspUserConfig(StrictModel):
    username: str = Field(min_length=1, max_length=128, description="User name")
    password: str = Field(min_length=1, max_length=256, description="Password")


class RtspAuthConfig(StrictModel):
    method: Literal["basic", "digest"] = Field("digest", description="HTTP authentication scheme for RTSP")
    realm: str = Field("streamer", min_length=1, max_length=128, description="Realm shown to viewers")
    users: list[RtspUserConfig] = Field(min_length=1, max_length=256, description="Accepted users")
    nonce_lifetime_s: float = Field(
        60.0, ge=1, le=3600,
        description="Digest: a nonce is accepted this long after its challenge, on its own connection only; "
        "later the client is asked again with stale=true (no new password prompt)",
    )
    max_failures: int = Field(
        5, ge=1, le=1000, description="Wrong passwords from one address within lockout_s that lock it out"
    )
    lockout_s: float = Field(
        30.0, ge=1, le=86400,
        description="How long an address that failed max_failures times is refused (403) without checking",
    )


class RtspServerConfig(StrictModel):
    enabled: bool = Field(True, description="Serve restored streams over RTSP")
    host: str = Field("0.0.0.0", description="Address to listen on")
    port: int = Field(8554, ge=0, le=65535, description="TCP port (0 = any free port)")
    udp: bool = Field(True, description="Offer RTP over UDP unicast besides TCP interleaved")
    session_timeout_s: float = Field(60.0, ge=5, le=3600, description="Drop UDP sessions silent this long")
    viewer_queue: int = Field(64, ge=4, le=4096, description="Access units buffered per viewer before dropping")
    max_viewers: int = Field(64, ge=1, le=10000, description="Sessions playing at once")
    auth: RtspAuthConfig | None = Field(None, description="Require a user name and password")
    max_connections: int = Field(
        256, ge=1, le=100000,
        description="Control connections open at once; at the cap a new one evicts the idlest non-playing one",
    )
    max_connections_per_address: int = Field(
        128, ge=1, le=100000,
        description="Control connections from one address; at the cap its idlest non-playing one is evicted",
    )
    idle_timeout_s: float = Field(
        30.0, ge=1, le=3600, description="Close a connection that sends no request this long (unless it plays)"
    )
    request_timeout_s: float = Field(
        10.0, ge=1, le=300, description="Close a connection whose request is not complete this long after it began"
    )
    setup_timeout_s: float = Field(
        5.0, ge=1, le=120, description="End a session that was set up but not played within this long"
    )
    max_sessions_per_connection: int = Field(4, ge=1, le=64, description="Sessions one connection may set up")
    max_sessions_per_address: int = Field(
        64, ge=1, le=10000,
        description="Sessions from one address; at the cap its oldest not-yet-playing one is ended",
    )
    max_pending_sessions: int = Field(
        32, ge=1, le=10000,
        description="Sessions set up but not yet playing, all addresses; at the cap the oldest is ended",
    )


BEARER_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]{16,4096}=*$")  # RFC 6750 b64token, at least 16 characters


class HttpAuthConfig(StrictModel):
    token: SecretStr | None = Field(
        None,
        description="Bearer token clients must send (Authorization: Bearer TOKEN): 16 to 4096 characters from "
        "A-Z a-z 0-9 - . _ ~ + / (then '=' padding); or use token_file",
    )
    token_file: str | None = Field(
        None, min_length=1, max_length=4096, description="File whose first line is the token (instead of token)"
    )
    realm: str = Field(
        "streamer", min_length=1, max_length=128, description="Realm named in the WWW-Authenticate challenge"
    )

    @field_validator("token", mode="before")
    @classmethod
    def _token_is_text(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str | SecretStr):
            raise ValueError("must be text: quote a token that YAML reads as a number or a date")
        return value

    @field_validator("token")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not BEARER_TOKEN.match(value.get_secret_value()):
            raise ValueError("must be 16 to 4096 characters from A-Z a-z 0-9 - . _ ~ + / (then '=' padding)")
        return value

    @field_validator("realm")
    @classmethod
    def _realm_fits_a_header(cls, value: str) -> str:
        if not all(" " <= char <= "~" and char not in '"\\' for char in value):
            raise ValueError("must be printable ASCII without quotes or backslashes")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> HttpAuthConfig:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("give either token or token_file")
        if self.token_file is not None:
            self.bearer_token()  # an unreadable or malformed file is a configuration error, not a runtime one
        return self

    def bearer_token(self) -> str:
        """The token, read from token_file when that is how it was given."""
        if self.token is not None:
            return self.token.get_secret_value()
        path = Path(self.token_file or "").expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"token_file: cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
        token = lines[0].strip() if lines else ""
        if not BEARER_TOKEN.match(token):
            raise ValueError(
                f"token_file: the first line of {path} must be 16 to 4096 characters from A-Z a-z 0-9 - . _ ~ + / "
                "(then '=' padding)"
            )
        return token


class HttpServerConfig(StrictModel):
    enabled: bool = Field(True, description="Serve /healthz, /metrics and the API")
    host: str = Field("0.0.0.0", description="Address to listen on")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0 = any free port)")
    auth: HttpAuthConfig | None = Field(
        None, description="Require a bearer token on every path except /healthz"
    )
    max_connections: int = Field(256, ge=1, le=10000, description="HTTP connections open at once; more are refused")
    max_connections_per_address: int = Field(
        32, ge=1, le=10000, description="HTTP connections open at once from one client address"
    )
    idle_timeout_s: float = Field(
        10.0,
        ge=0.5,
        le=3600,
        description="Close a connection that has not completed a request this long after it opened or after its "
        "last response (idle keep-alive, silent and half-sent requests)",
    )
    max_url_bytes: int = Field(4096, ge=256, le=65536, description="Longest request target (path and query)")
    max_header_bytes: int = Field(8190, ge=256, le=65536, description="Longest header field (name and value)")
    max_headers: int = Field(64, ge=8, le=1024, description="Most header fields in one request")
    max_body_bytes: int = Field(
        65536, ge=0, le=16 * 1024 * 1024, description="Largest request body; a longer Content-Length gets 413"
    )


class ServerConfig(StrictModel):
    rtsp: RtspServerConfig = Field(default_factory=RtspServerConfig, description="RTSP server")
    http: HttpServerConfig = Field(default_factory=HttpServerConfig, description="HTTP server")


class AppConfig(StrictModel):
    cameras: list[CameraConfig] = Field(min_length=1, max_length=64, description="Cameras to restore")
    server: ServerConfig = Field(default_factory=ServerConfig, description="Servers")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Logging level")

    @model_validator(mode="after")
    def _unique_names(self) -> AppConfig:
        names = [camera.name for camera in self.cameras]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"camera names must be unique, repeated: {', '.join(duplicates)}")
        return self


# --------------------------------------------------------------------------------------------- loading
PATTERN_MEANINGS = {
    NAME_PATTERN: "must be 1 to 64 characters: letters, digits, '_', '.' or '-', not starting with '.' or '-'",
}
TAGGED_UNIONS = {  # the field holding a union keyed on `type` -> the kinds it takes
    "source": ("rtsp", "demo", "file"),
    "sinks": ("file", "rtsp_publish"),
}


def _field_path(location: tuple[Any, ...]) -> str:
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


def _plain_message(item: Any) -> str:
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
        lines.append(f"  {_field_path(tuple(item['loc']))}: {_plain_message(item)}")
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
