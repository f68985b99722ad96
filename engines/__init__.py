"""Restoration engines: one interface (activate / infer / deactivate), several backends.

Backends are imported lazily so that optional ones (TensorRT) cost nothing where they are absent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from engines.base import Engine, EngineError, ModelInfo

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = MODELS_DIR / "lite.onnx"

__all__ = [
    "DEFAULT_MODEL",
    "MODELS_DIR",
    "Engine",
    "EngineError",
    "ModelInfo",
    "activate_engine",
    "create_engine",
    "engine_candidates",
    "int8_twin",
    "resolve_model",
    "shipped_models",
]


def shipped_models() -> list[str]:
    """Names of the float models shipped in the package (``lite``, ``lite-causal``, ...)."""
    return sorted(path.stem for path in MODELS_DIR.glob("*.onnx") if not path.name.endswith(".int8.onnx"))


def resolve_model(model: str | Path | None) -> Path:
    """The ONNX file for ``model``: an existing file, a shipped model's name (``lite-causal``), a path (checked
    when the engine loads it), or None for the default."""
    if model is None or str(model) == "":
        return DEFAULT_MODEL
    text = str(model)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if "/" not in text and "\\" not in text and not text.endswith(".onnx"):
        shipped = MODELS_DIR / f"{text}.onnx"
        if not shipped.is_file():
            raise EngineError(f"no shipped model named {text!r} (shipped: {', '.join(shipped_models())})")
        return shipped
    return path


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
    tensorrt_int8: bool = False,
) -> Engine:
    """Factory of one backend: ``kind`` is cpu, tensorrt, cuda (PyTorch CUDA), passthrough, or auto (the best
    of ``engine_candidates('auto')``, without trying it; ``activate_engine`` tries each in turn).

    ``model`` is a shipped model's name (see ``shipped_models()``) or an ONNX file path; None is ``lite``.

    On the CPU, ``int8`` runs the model's quantised twin (``NAME.int8.onnx`` beside ``NAME.onnx``, made by
    tools/quantize.py) when there is one; TensorRT and PyTorch CUDA always build from the float model, TensorRT
    in INT8 with ``tensorrt_int8`` (from the calibration cache ``tools/build_engine.py --precision int8`` makes)."""
    model_path = resolve_model(model)
    if kind == "auto":
        kind = engine_candidates("auto")[0]
    if kind == "passthrough":
        from engines.passthrough import PassthroughEngine

        return PassthroughEngine()
    if kind == "tensorrt":
        from engines.tensorrt_backend import TensorRTEngine

        return TensorRTEngine(model_path, fp16=fp16, cache_dir=Path(cache_dir).expanduser(),
                              precision="int8" if tensorrt_int8 else None)
    if kind == "cuda":
        from engines.torch_backend import TorchEngine

        return TorchEngine(model_path, device="cuda", fp16=fp16)
    if kind == "cpu":
        from engines.onnx_cpu import OnnxCpuEngine

        return OnnxCpuEngine(int8_twin(model_path) if int8 else model_path, threads=threads)
    raise EngineError(f"unknown engine type {kind!r} (auto, cpu, tensorrt, cuda, passthrough)")


GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version", "/dev/nvhost-ctrl-gpu")


def nvidia_gpu_present() -> bool:
    """A cheap look for an NVIDIA driver (x86 or Jetson) before importing TensorRT or PyTorch to ask it."""
    return any(Path(path).exists() for path in GPU_DEVICE_FILES)


def engine_candidates(kind: str) -> list[str]:
    """The backends to try for ``kind``, best first: ``auto`` is TensorRT where it and a GPU are usable,
    then PyTorch CUDA, then the CPU; any other kind is just itself."""
    if kind != "auto":
        return [kind]
    candidates: list[str] = []
    if nvidia_gpu_present():
        from engines.tensorrt_backend import tensorrt_available
        from engines.torch_backend import torch_cuda_available

        candidates += ["tensorrt"] if tensorrt_available() else []
        candidates += ["cuda"] if torch_cuda_available() else []
    return [*candidates, "cpu"]


def activate_engine(
    kind: str,
    model: str | Path | None = None,
    threads: int = 0,
    fp16: bool = True,
    cache_dir: str | Path = "~/.cache/streamer/engines",
    int8: bool = True,
    candidates: Sequence[str] | None = None,
    factory: Callable[..., Engine] = create_engine,
    tensorrt_int8: bool = False,
) -> Engine:
    """Create and activate an engine (a TensorRT build happens here, not on the first frame). ``auto``
    tries each candidate in turn and logs why one could not be used; an explicit kind fails at once."""
    failures: list[str] = []
    for candidate in candidates if candidates is not None else engine_candidates(kind):
        engine = factory(candidate, model, threads, fp16, cache_dir, int8, tensorrt_int8)
        try:
            engine.activate()
        except EngineError as error:
            if kind != "auto":
                raise
            failures.append(f"{candidate}: {error}")
            log.warning("engine %s cannot be used (%s); trying the next backend", candidate, error)
            continue
        return engine
    raise EngineError("no engine backend could be activated: " + "; ".join(failures))
