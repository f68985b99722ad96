"""Restoration engines: one interface (activate / infer / deactivate), several backends.

Backends are imported lazily so that optional ones (TensorRT) cost nothing where they are absent.
"""

from __future__ import annotations

from pathlib import Path

from engines.base import Engine, EngineError, ModelInfo

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = MODELS_DIR / "lite.onnx"

__all__ = ["DEFAULT_MODEL", "MODELS_DIR", "Engine", "EngineError", "ModelInfo", "create_engine"]


def create_engine(
    kind: str,
    model: str | Path | None = None,
    threads: int = 0,
    fp16: bool = True,
    cache_dir: str | Path = "~/.cache/streamer/engines",
) -> Engine:
    """Factory: ``kind`` is auto, cpu, tensorrt or passthrough. ``auto`` tries TensorRT, then the CPU."""
    model_path = Path(model).expanduser() if model else DEFAULT_MODEL
    if kind == "passthrough":
        from engines.passthrough import PassthroughEngine

        return PassthroughEngine()
    if kind in ("tensorrt", "auto"):
        from engines.tensorrt_backend import TensorRTEngine, tensorrt_available

        if kind == "tensorrt" or tensorrt_available():
            return TensorRTEngine(model_path, fp16=fp16, cache_dir=Path(cache_dir).expanduser())
    if kind in ("cpu", "auto"):
        from engines.onnx_cpu import OnnxCpuEngine

        return OnnxCpuEngine(model_path, threads=threads)
    raise EngineError(f"unknown engine type {kind!r} (auto, cpu, tensorrt, passthrough)")
