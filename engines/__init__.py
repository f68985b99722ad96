"""Restoration engines: one interface (activate / infer / deactivate), several backends.

Backends are imported lazily so that optional ones (TensorRT) cost nothing where they are absent.
"""

from __future__ import annotations

from pathlib import Path

from engines.base import Engine, EngineError, ModelInfo

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = MODELS_DIR / "lite.onnx"

__all__ = ["DEFAULT_MODEL", "MODELS_DIR", "Engine", "EngineError", "ModelInfo", "create_engine", "int8_twin"]


def int8_twin(model_path: Path) -> Path:
    """``NAME.int8.onnx`` next to ``NAME.onnx`` when it exists (and ``model_path`` is not already it)."""
    if model_path.name.endswith(".int8.onnx"):
        return model_path
    twin = model_path.with_name(model_path.stem + ".int8.onnx")
    return twin if twin.is_file() else model_path


def create_engine(
    kind: str,
    model: str | Path | None = None,
    threads: int = 0,
    fp16: bool = True,
    cache_dir: str | Path = "~/.cache/streamer/engines",
    int8: bool = True,
) -> Engine:
    """Factory: ``kind`` is auto, cpu, tensorrt or passthrough. ``auto`` tries TensorRT, then the CPU.

    On the CPU, ``int8`` runs the model's quantised twin (``NAME.int8.onnx`` beside ``NAME.onnx``, made by
    tools/quantize.py) when there is one; TensorRT always builds from the float model."""
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

        return OnnxCpuEngine(int8_twin(model_path) if int8 else model_path, threads=threads)
    raise EngineError(f"unknown engine type {kind!r} (auto, cpu, tensorrt, passthrough)")
