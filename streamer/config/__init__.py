"""Configuration: pydantic v2 models, loaded from YAML with environment overrides.

Every model forbids unknown keys, every field is described and bounded. A bad file is reported with the
dotted path of the field and the reason in plain words (see ``ConfigError``). ``camera`` holds one
camera's models, ``servers`` the RTSP and HTTP servers', ``loading`` the whole configuration and how it is
read; everything is importable from ``streamer.config``.
"""

from streamer.config.base import NAME_PATTERN, ConfigError, RtspUrl, StrictModel, check_rtsp_url
from streamer.config.camera import (
    CameraConfig,
    DemoSourceConfig,
    EncoderConfig,
    EngineConfig,
    ExposureConfig,
    FileSinkConfig,
    FileSourceConfig,
    LadderConfig,
    RtspPublishSinkConfig,
    RtspSourceConfig,
    SinkConfig,
    SourceConfig,
    WhipSourceConfig,
    WindowConfig,
)
from streamer.config.loading import (
    ENV_PREFIX,
    AppConfig,
    apply_env_overrides,
    build_config,
    format_validation_error,
    load_config_file,
    read_config_data,
    source_from_argument,
)
from streamer.config.servers import (
    HttpAuthConfig,
    HttpServerConfig,
    IceServerConfig,
    InferenceConfig,
    JobsConfig,
    RtspAuthConfig,
    RtspServerConfig,
    RtspUserConfig,
    ServerConfig,
    WebRtcServerConfig,
)
from streamer.config.taps import DEFAULT_TAP_ENDPOINT, TapPointConfig, TapsConfig

__all__ = [
    "DEFAULT_TAP_ENDPOINT",
    "ENV_PREFIX",
    "NAME_PATTERN",
    "AppConfig",
    "CameraConfig",
    "ConfigError",
    "DemoSourceConfig",
    "EncoderConfig",
    "EngineConfig",
    "ExposureConfig",
    "FileSinkConfig",
    "FileSourceConfig",
    "HttpAuthConfig",
    "HttpServerConfig",
    "IceServerConfig",
    "InferenceConfig",
    "JobsConfig",
    "LadderConfig",
    "RtspAuthConfig",
    "RtspPublishSinkConfig",
    "RtspServerConfig",
    "RtspSourceConfig",
    "RtspUrl",
    "RtspUserConfig",
    "ServerConfig",
    "SinkConfig",
    "SourceConfig",
    "StrictModel",
    "TapPointConfig",
    "TapsConfig",
    "WebRtcServerConfig",
    "WhipSourceConfig",
    "WindowConfig",
    "apply_env_overrides",
    "build_config",
    "check_rtsp_url",
    "format_validation_error",
    "load_config_file",
    "read_config_data",
    "source_from_argument",
]
