"""TensorRT plans without a GPU: the optimisation profiles, the engine cache key, and the build itself.

Profiles, profile selection and cache keys are pure and tested in CI; ``build_serialized_engine`` and the
INT8 calibrator need TensorRT (``engines.tensorrt_backend`` calls them at activation, ``tools/build_engine.py``
ahead of time).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import EngineError
from engines.cache import EngineCacheKey
from engines.processing import padded_size
from engines.uint8_io import U8_INPUT, WRAPPER_VERSION

PRECISIONS = ("fp16", "fp32", "int8")
DEFAULT_MAX_BATCH = 8


def _check(result: Any) -> Any:
    """The value of a cuda-python call, or ``EngineError`` naming the CUDA error."""
    error, *rest = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise EngineError(f"CUDA call failed: {error}")
    return rest[0] if len(rest) == 1 else rest


@dataclass(frozen=True, slots=True)
class SizeClass:
    """Frames up to ``max_size`` (height, width), tuned for ``opt_size``, in batches of up to ``max_batch``."""

    opt_size: tuple[int, int]
    max_size: tuple[int, int]
    max_batch: int
    opt_batch: int = 1


# 360p-720p cameras and the tiles of larger frames (512 + overlaps) batch across cameras; 1080p in fours;
# 4K (only when tiling is off) one at a time
DEFAULT_CLASSES = (
    SizeClass((360, 640), (720, 1280), DEFAULT_MAX_BATCH, opt_batch=4),
    SizeClass((1080, 1920), (1088, 1920), 4, opt_batch=2),
    SizeClass((2160, 3840), (2160, 3840), 1),
)


@dataclass(frozen=True, slots=True)
class ShapeProfile:
    """The input shapes one profile accepts, ``frames_u8`` [B*N, H, W, 3] from ``min`` to ``max``."""

    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    def admits(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == 4 and all(low <= value <= high for low, value, high in zip(self.min, shape, self.max, strict=False))

    def describe(self) -> str:
        return "|".join("x".join(map(str, shape)) for shape in (self.min, self.opt, self.max))


def plan_profiles(window: int, multiple: int, max_batch: int = DEFAULT_MAX_BATCH,
                  classes: Sequence[SizeClass] = DEFAULT_CLASSES) -> list[ShapeProfile]:
    """One profile per size class, smallest first; batches capped at ``max_batch``; sizes padded to the
    model's multiple (the host pads the frames so). Every profile starts at the smallest frame, so a
    frame size falls in the first profile whose largest size holds it."""
    if window < 1 or multiple < 1 or max_batch < 1:
        raise EngineError(f"bad profile request: window {window}, multiple {multiple}, max_batch {max_batch}")
    profiles: list[ShapeProfile] = []
    for size_class in sorted(classes, key=lambda item: item.max_size[0] * item.max_size[1]):
        batch = max(1, min(size_class.max_batch, max_batch))
        opt_batch = max(1, min(size_class.opt_batch, batch))
        opt = padded_size(*size_class.opt_size, multiple)
        high = padded_size(*size_class.max_size, multiple)
        profiles.append(ShapeProfile((window, multiple, multiple, 3), (window * opt_batch, *opt, 3),
                                     (window * batch, *high, 3)))
    return profiles


def select_profile(profiles: Sequence[ShapeProfile], shape: tuple[int, ...]) -> int:
    """The index of the first (smallest) profile that admits ``shape``; ``EngineError`` when none does."""
    for index, profile in enumerate(profiles):
        if profile.admits(shape):
            return index
    largest = profiles[-1].max if profiles else ()
    raise EngineError(f"frame tensor {shape} fits none of the engine's profiles (largest {largest})")


def cache_key_for(model_bytes: bytes, profiles: Sequence[ShapeProfile], precision: str, tensorrt_version: str,
                  gpu: str, calibration: bytes = b"") -> EngineCacheKey:
    """Everything that shaped a built engine: the (wrapped) model, its profiles, precision (with the INT8
    calibration's hash), TensorRT version, GPU name and compute capability."""
    if precision not in PRECISIONS:
        raise EngineError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")
    label = precision if precision != "int8" else f"int8-{hashlib.sha256(calibration).hexdigest()[:12]}"
    return EngineCacheKey(
        onnx_sha256=hashlib.sha256(model_bytes).hexdigest(),
        profile=";".join(profile.describe() for profile in profiles) + f";{WRAPPER_VERSION}",
        precision=label,
        tensorrt_version=tensorrt_version,
        gpu=gpu,
    )


def calibration_cache_path(cache_dir: Path, model_bytes: bytes) -> Path:
    """Where ``tools/build_engine.py --precision int8`` leaves the INT8 calibration of a model (TensorRT's text format)."""
    return cache_dir / f"calibration-{hashlib.sha256(model_bytes).hexdigest()[:16]}.cache"



def build_serialized_engine(trt: Any, model_bytes: bytes, profiles: Sequence[ShapeProfile], precision: str,
                            timing_cache: Path | None = None, calibrator: Any = None,
                            calibration: tuple[int, int, int, int] | None = None) -> bytes:
    """Parse the (wrapped) ONNX model and build a plan with ``profiles`` (index = size class; contexts share
    a profile, TensorRT 10's default); INT8 takes ``calibrator`` and
    calibrates at ``calibration`` (one window, the calibration profile). The timing cache file (when given)
    seeds the tactic timings and is saved back with what this build measured."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse the model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    for profile in profiles:
        optimisation = builder.create_optimization_profile()
        optimisation.set_shape(U8_INPUT, profile.min, profile.opt, profile.max)
        config.add_optimization_profile(optimisation)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator  # implicit INT8 calibration: deprecated since TensorRT 10.1, still there
        if calibration is None:
            raise EngineError("an INT8 build needs the calibration batches' shape")
        calibration_profile = builder.create_optimization_profile()
        calibration_profile.set_shape(U8_INPUT, calibration, calibration, calibration)
        if config.set_calibration_profile(calibration_profile) is False:
            raise EngineError(f"TensorRT refused the calibration profile {calibration}")
    if timing_cache is not None:
        known = timing_cache.read_bytes() if timing_cache.exists() else b""
        config.set_timing_cache(config.create_timing_cache(known), False)
    plan = builder.build_serialized_network(network, config)
    if getattr(calibrator, "error", None) is not None:
        raise calibrator.error
    if plan is None:
        raise EngineError(f"TensorRT failed to build an engine ({precision}, {len(profiles)} profiles)")
    if timing_cache is not None:
        timings = bytes(config.get_timing_cache().serialize())
        partial = timing_cache.with_name(f"{timing_cache.name}.{threading.get_ident()}.tmp")
        partial.write_bytes(timings)
        partial.replace(timing_cache)
    return bytes(plan)


def calibration_shape(window: int, multiple: int) -> tuple[int, int, int, int]:
    """The one input shape INT8 calibration runs at: one window of 640x360 frames, padded to ``multiple``."""
    return (window, *padded_size(360, 640, multiple), 3)


def make_calibrator(trt: Any, cudart: Any, batches: Iterable[np.ndarray] | None, cache_path: Path,
                    shape: tuple[int, ...]) -> Any:
    """An ``IInt8EntropyCalibrator2`` fed ``batches`` (uint8, each exactly ``shape``: TensorRT reads the
    calibration profile's shape from the pointer) that reads and writes its result at ``cache_path`` (a
    later build reads the cache and calibrates nothing)."""
    base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if base is None:
        raise EngineError("this TensorRT has no implicit INT8 calibration (IInt8EntropyCalibrator2); use fp16")

    class Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self._batches = iter(batches if batches is not None else ())
            self._device = 0
            self._capacity = 0
            self.error: EngineError | None = None
            self.used = 0  # batches handed to TensorRT

        def get_batch_size(self) -> int:
            return 1  # explicit batch: the batch is in the shape

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._batches, None)
            if batch is None:
                if self._device:
                    cudart.cudaFree(self._device)
                    self._device = self._capacity = 0
                return None
            batch = np.ascontiguousarray(batch, dtype=np.uint8)
            if batch.shape != tuple(shape):  # kept, not raised: TensorRT is in the middle of a build
                self.error = EngineError(f"a calibration batch is {batch.shape}, the calibration profile {tuple(shape)}")
                self._batches = iter(())
                return self.get_batch(names)
            if batch.nbytes > self._capacity:
                if self._device:
                    cudart.cudaFree(self._device)
                self._device = int(_check(cudart.cudaMalloc(batch.nbytes)))
                self._capacity = batch.nbytes
            kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            _check(cudart.cudaMemcpy(self._device, batch.ctypes.data, batch.nbytes, kind))
            self.used += 1
            return [self._device for _ in names]

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path.exists() else None

        def write_calibration_cache(self, cache: Any) -> None:
            if self.error is not None or not self.used:
                return  # no cache from a failed or empty calibration: the next build must calibrate again
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            partial = cache_path.with_name(f"{cache_path.name}.tmp")
            partial.write_bytes(bytes(cache))
            partial.replace(cache_path)

    return Calibrator()
