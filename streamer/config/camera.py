"""One camera: its source, temporal window, engine, encoder and extra outputs (sinks)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from streamer.config.base import NAME_PATTERN, RtspUrl, StrictModel, check_model
from streamer.config.servers import check_bearer_token
from streamer.config.taps import TapsConfig


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
    brightness: float = Field(
        1.0, ge=0.01, le=1.0, description="Scene light (linear): 1 = daylight, 0.05 = a night camera, to try "
        "the camera's exposure correction on")
    timestamp_strip: bool = Field(True, description="Embed a wallclock barcode for latency measurement")


class FileSourceConfig(StrictModel):
    type: Literal["file"] = "file"
    path: str = Field(description="A video file, played at its own frame rate")
    loop: bool = Field(True, description="Start again at the end")


class WhipSourceConfig(StrictModel):
    type: Literal["whip"] = "whip"
    token: SecretStr | None = Field(
        None,
        description="Bearer token a publisher must send to POST /whip/<camera name> (16 to 4096 characters); "
        "default: server.http.auth's token, or none when that is not set",
    )

    @field_validator("token")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        return check_bearer_token(value)


SourceConfig = Annotated[
    RtspSourceConfig | DemoSourceConfig | FileSourceConfig | WhipSourceConfig, Field(discriminator="type")
]


# --------------------------------------------------------------------------------------------- engine
# the ladder's default 'fast' level: the cheaper model with the same window
FAST_MODELS = {
    "lite-detail": "lite",
    "lite-detail-causal": "lite-causal",
    "lite-detail-recurrent": "lite",
    "lite-fine": "lite-fast",  # lite (0.85x lite-fine's time) would be too small a step
    "lite-fine-wide": "lite",  # 0.6x its time; lite-fine (0.8x) would hardly relieve it
    "lite-recurrent": "lite",
    "lite-recurrent-wide": "lite",
    "lite-sr2": "lite",  # at the camera's size; the output scaler brings it to the model's (streamer/upscale.py)
}


def _fast_model_defaults() -> str:
    """FAST_MODELS in words, for the ``fast_model`` description: "'lite' under 'lite-detail', ...; ..."."""
    by_fast: dict[str, list[str]] = {}
    for model, fast in FAST_MODELS.items():
        by_fast.setdefault(fast, []).append(f"'{model}'")
    return "; ".join(f"'{fast}' under {', '.join(models)}" for fast, models in by_fast.items())


class LadderConfig(StrictModel):
    enabled: bool = Field(True, description="Degrade restoration (cheaper levels) rather than skip frames when "
                          "compute falls short; off = one level, frames skipped when the engine is busy")
    fast_model: str | None = Field(
        None, description=f"Model of the 'fast' level; default: {_fast_model_defaults()}; none (no fast level) "
        "otherwise. Under 'lite-sr2' it runs at the camera's size and is scaled bicubic",
    )
    half: bool = Field(True, description="The 'half' level: the cheapest model at half resolution, upsampled")
    quarter: bool = Field(
        False, description="The 'quarter' level: the cheapest model at quarter resolution (off by default: on mild "
        "noise it loses more detail than it removes noise, -0.4 dB on the demo camera at 720p)",
    )
    temporal: bool = Field(True, description="The 'temporal' level: a classical 3-frame filter (no model)")
    cpu: bool = Field(
        True, description="The 'cpu' level, when the engine runs on a GPU: the cheapest model on ONNX Runtime on "
        "the CPU (int8), so frames are still restored by a model when the GPU fails (out of memory, device lost) "
        "or falls behind",
    )
    cpu_factor: Literal[1, 2, 4] = Field(
        2, description="The 'cpu' level's downscale: 1 = full resolution, 2 = half (default; a 1080p camera costs "
        "the CPU what a 540p one does), 4 = quarter",
    )
    probe_after_s: float = Field(
        10.0, ge=1, le=600, description="Seconds at a level without a missed frame before one level up is tried "
        "(doubled after each failed try, up to 120 s)",
    )

    @field_validator("fast_model")
    @classmethod
    def _fast_model_exists(cls, value: str | None) -> str | None:
        return check_model(value)


class EngineConfig(StrictModel):
    type: Literal["auto", "cpu", "tensorrt", "cuda", "passthrough"] = Field(
        "auto", description="auto = TensorRT when a GPU is usable, else ONNX Runtime on the CPU; cuda = PyTorch CUDA"
    )
    model: str | None = Field(
        None,
        description="A shipped model's name ('lite', 'lite-causal' = lowest latency, 'lite-fast', 'lite-detail' = best "
        "on codec artefacts, 2.5x lite's compute, 'lite-detail-causal', 'lite-fine' = lite's design at 2x2 "
        "space-to-depth: finer detail at 1.2x lite's compute, 'lite-fine-wide' = the same at 1.5x the width: above "
        "'lite-detail' on noise at 0.7-0.8x its compute, 'lite-recurrent' = noisy fixed cameras, not on TensorRT, "
        "'lite-recurrent-wide' = the same at 1.4x its compute, better on noise, 'lite-detail-recurrent' = "
        "'lite-detail' with recurrent state, best on noise, 1.2x its compute, not on TensorRT, 'lite-sr2' = x2 "
        "super-resolution for low-resolution substreams: the output is twice the camera's size) or an ONNX file; "
        "default: 'lite'",
    )
    threads: int = Field(0, ge=0, le=256, description="CPU inference threads (0 = all cores)")
    int8: bool = Field(
        True,
        description="CPU: run the model's int8 twin (NAME.int8.onnx beside NAME.onnx) when there is one",
    )
    fp16: bool = Field(True, description="TensorRT and PyTorch CUDA: fp16 (false: fp32)")
    tensorrt_int8: bool = Field(
        False, description="TensorRT: build in INT8 (fp16 where INT8 has no kernel) from the calibration cache that "
        "'python -m tools.build_engine --precision int8 --calibration CLIP' makes from real degraded frames",
    )
    cache_dir: str = Field(
        "~/.cache/streamer/engines", description="TensorRT: where built engines are cached"
    )
    ladder: LadderConfig = Field(default_factory=LadderConfig, description="Degradation ladder")
    tile_above_pixels: int = Field(
        1920 * 1080, ge=0, le=8192 * 8192,
        description="Frames with more pixels than this (default: above 1080p) are restored in overlapping tiles, "
        "so that memory stays bounded (4K: 156 MB instead of 2 GB); 0 = always tile",
    )
    tile_size: int = Field(512, ge=64, le=4096, description="Tile size in pixels (tiled frames)")
    tile_overlap: int = Field(32, ge=0, le=256, description="Tile overlap in pixels: >= the model's reach (32 px)")

    @field_validator("model")
    @classmethod
    def _model_exists_when_named(cls, value: str | None) -> str | None:
        return check_model(value)


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
    profile: Literal["baseline", "main", "high"] = Field(
        "baseline",
        description="H.264 profile; WebRTC viewers (browsers through aiortc) need 'baseline' (constrained "
        "baseline, no B-frames); main/high only suit RTSP and file outputs",
    )
    keyframe_request_interval_s: float = Field(
        0.25, ge=0.05, le=10,
        description="Instant start: a new viewer (RTSP PLAY, WebRTC) or a WebRTC PLI/FIR asks for an IDR; at most "
        "one per this interval per stream, later requests share the next one",
    )


class ExposureConfig(StrictModel):
    enabled: bool = Field(
        False, description="Brighten dark scenes after restoration (night cameras): one smoothed gain a frame "
        "brings the scene's log-average luminance to target_key; a bright scene is left alone"
    )
    target_key: float = Field(
        0.18, ge=0.02, le=0.5, description="Log-average linear luminance aimed at (0.18: middle grey)"
    )
    max_gain: float = Field(16.0, ge=1.0, le=64.0, description="Largest gain (linear light); 1 turns it off")
    adapt_s: float = Field(
        1.0, ge=0.05, le=60, description="Time constant of the gain's smoothing (no pumping from frame to frame)"
    )
    knee: float = Field(
        0.6, ge=0.1, le=0.95, description="Linear level above which the curve rolls off towards white (no clipping)"
    )


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
    taps: TapsConfig = Field(default_factory=TapsConfig, description="ZeroMQ frame taps (raw and restored frames)")
    exposure: ExposureConfig = Field(default_factory=ExposureConfig, description="Exposure correction (off)")
    queue_frames: int = Field(8, ge=1, le=256, description="Bound of each frame queue between stages")
    stall_timeout_s: float = Field(
        5.0, ge=0.5, le=600, description="Not ready (/readyz 503) when no output frame was produced for this long"
    )
