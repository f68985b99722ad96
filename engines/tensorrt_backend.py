"""TensorRT 10+ on NVIDIA GPUs (x86 and Jetson): named tensors and ``execute_async_v3``.

Kept thin on purpose: the tensors going in and out are packed/unpacked by ``engines.processing``, exactly
as for the CPU backend. The engine is built from the same ONNX file when the backend is activated, with
one optimisation profile that covers every frame size up to 4K (tuned for 720p), and cached on disk (see
``engines.cache``). Needs the ``gpu`` extra: ``tensorrt`` and ``cuda-python``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import INPUT_NAME, OUTPUT_NAME, Engine, EngineError
from engines.cache import EngineCacheKey, cached_engine_path, file_sha256, load_or_build, timing_cache_path
from engines.onnx_cpu import read_model_info
from engines.processing import WindowPacker, unpack_output

log = logging.getLogger(__name__)


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart
    return cudart


def tensorrt_available() -> bool:
    """True when TensorRT imports and a CUDA device answers."""
    try:
        import tensorrt  # noqa: F401

        cudart = _cudart()
        error, count = cudart.cudaGetDeviceCount()
        return int(error) == 0 and count > 0
    except Exception:
        return False


def _check(result: Any) -> Any:
    error, *rest = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise EngineError(f"CUDA call failed: {error}")
    return rest[0] if len(rest) == 1 else rest


MAX_HEIGHT, MAX_WIDTH = 2160, 3840  # the largest frame one engine takes (4K); larger frames are refused
OPT_HEIGHT, OPT_WIDTH = 720, 1280  # the size TensorRT tunes its kernels for


@dataclass(frozen=True, slots=True)
class ShapeProfile:
    """The input shapes one engine accepts: [B, C, H, W] from ``min`` to ``max``, tuned for ``opt``."""

    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    @classmethod
    def for_model(cls, channels: int, multiple: int, opt_size: tuple[int, int] = (OPT_HEIGHT, OPT_WIDTH)) -> ShapeProfile:
        def padded(height: int, width: int) -> tuple[int, int]:
            return -(-height // multiple) * multiple, -(-width // multiple) * multiple

        low = padded(multiple, multiple)
        high = padded(MAX_HEIGHT, MAX_WIDTH)
        opt = padded(min(opt_size[0], high[0]), min(opt_size[1], high[1]))
        return cls((1, channels, *low), (1, channels, *opt), (1, channels, *high))

    def admits(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == 4 and all(low <= value <= high for low, value, high in zip(self.min, shape, self.max, strict=False))

    def describe(self) -> str:
        return "|".join("x".join(map(str, shape)) for shape in (self.min, self.opt, self.max))


class TensorRTEngine(Engine):
    """Built (or loaded from the cache) at activation, for every frame size up to 4K: a failed build is an
    ``EngineError`` from ``activate`` (so ``auto`` falls back to the CPU), never an error on a frame."""

    backend = "tensorrt"
    device = "cuda"
    max_batch = 1  # the profile's batch is 1 (a profile for the scheduler's batches is not built yet)

    def __init__(
        self,
        model_path: Path,
        fp16: bool = True,
        cache_dir: Path | None = None,
        opt_size: tuple[int, int] = (OPT_HEIGHT, OPT_WIDTH),
    ) -> None:
        super().__init__()
        self.model_path = model_path
        self.fp16 = fp16
        self.cache_dir = cache_dir or Path("~/.cache/streamer/engines").expanduser()
        self.info = read_model_info(model_path)
        self.profile = ShapeProfile.for_model(3 * self.info.window, self.info.pad_multiple, opt_size)
        self._trt: Any = None
        self._cudart: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._shape: tuple[int, ...] | None = None
        self._capacity = (0, 0)  # bytes allocated on the device for input and output
        self._device_in = 0
        self._device_out = 0
        self._packer = WindowPacker(self.info.pad_multiple)
        self._host_out: np.ndarray | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def _activate(self) -> None:
        try:
            import tensorrt as trt
        except ImportError:
            raise EngineError("TensorRT is not installed (pip install 'streamer[gpu]')") from None
        self._trt = trt
        self._cudart = _cudart()
        try:
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self._stream = _check(self._cudart.cudaStreamCreate())
            self._engine = self._load_or_build()
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")
        except EngineError:
            self._deactivate()
            raise
        except Exception as error:  # TensorRT and CUDA raise their own kinds
            self._deactivate()
            raise EngineError(f"TensorRT engine for {self.model_path.name} failed: {error}") from None

    def _deactivate(self) -> None:
        if self._cudart is not None:
            self._release_buffers()
            if self._stream is not None:
                self._cudart.cudaStreamDestroy(self._stream)
        self._stream = None
        self._context = None
        self._engine = None
        self._runtime = None

    # -- inference -------------------------------------------------------------------------------------
    def _infer(self, window: list[np.ndarray]) -> np.ndarray:
        height, width = window[0].shape[:2]
        host_in = np.ascontiguousarray(self._packer.pack(window))
        if self._shape != host_in.shape or self._host_out is None:
            self._set_shape(tuple(host_in.shape))
        if self._host_out is None:
            raise EngineError("TensorRT output buffer missing")
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart.cudaMemcpyAsync(self._device_in, host_in.ctypes.data, host_in.nbytes, h2d, self._stream))
        if not self._context.execute_async_v3(self._stream):
            raise EngineError("TensorRT execute_async_v3 failed")
        _check(cudart.cudaMemcpyAsync(self._host_out.ctypes.data, self._device_out, self._host_out.nbytes, d2h, self._stream))
        _check(cudart.cudaStreamSynchronize(self._stream))
        scale = self.info.scale
        return unpack_output(self._host_out, height * scale, width * scale)

    def _set_shape(self, shape: tuple[int, ...]) -> None:
        """A new frame size: set the input shape (no rebuild: the profile covers it) and grow the buffers."""
        if not self.profile.admits(shape):
            raise EngineError(f"frame tensor {shape} is outside the engine's profile {self.profile.describe()}")
        if not self._context.set_input_shape(INPUT_NAME, shape):
            raise EngineError(f"TensorRT refused the input shape {shape}")
        out_shape = tuple(self._context.get_tensor_shape(OUTPUT_NAME))
        self._host_out = np.empty(out_shape, dtype=np.float32)
        in_bytes, out_bytes = int(np.prod(shape)) * 4, self._host_out.nbytes
        if in_bytes > self._capacity[0] or out_bytes > self._capacity[1]:
            self._release_buffers()
            self._device_in = _check(self._cudart.cudaMalloc(in_bytes))
            self._device_out = _check(self._cudart.cudaMalloc(out_bytes))
            self._capacity = (in_bytes, out_bytes)
        self._context.set_tensor_address(INPUT_NAME, int(self._device_in))
        self._context.set_tensor_address(OUTPUT_NAME, int(self._device_out))
        self._shape = shape

    def _release_buffers(self) -> None:
        for pointer in (self._device_in, self._device_out):
            if pointer:
                self._cudart.cudaFree(pointer)
        self._device_in = self._device_out = 0
        self._capacity = (0, 0)
        self._shape = None

    # -- engine build / cache --------------------------------------------------------------------------
    def cache_key(self) -> EngineCacheKey:
        props = _check(self._cudart.cudaGetDeviceProperties(0))
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        gpu = f"{name.strip(chr(0))}-sm{props.major}{props.minor}"
        return EngineCacheKey(
            onnx_sha256=file_sha256(self.model_path),
            profile=self.profile.describe(),
            precision="fp16" if self.fp16 else "fp32",
            tensorrt_version=self._trt.__version__,
            gpu=gpu,
        )

    def _load_or_build(self) -> Any:
        key = self.cache_key()
        path = cached_engine_path(self.cache_dir, key)
        timing = timing_cache_path(self.cache_dir, key.tensorrt_version, key.gpu)
        started = time.monotonic()

        def build() -> bytes:
            return build_serialized_engine(self._trt, self.model_path, self.profile, self.fp16, timing)

        engine, built = load_or_build(path, self._runtime.deserialize_cuda_engine, build)
        if built:
            log.info("TensorRT engine built in %.0f s for %s and cached at %s", time.monotonic() - started,
                     self.profile.describe(), path)
        else:
            log.info("TensorRT engine loaded from cache %s", path)
        return engine


def build_serialized_engine(trt: Any, model_path: Path, profile: ShapeProfile, fp16: bool,
                            timing_cache: Path | None = None) -> bytes:
    """Parse the ONNX file and build a plan with one optimisation profile covering ``profile``; the timing
    cache file (when given) seeds the tactic timings and is saved back with what this build measured."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse {model_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    optimisation = builder.create_optimization_profile()
    optimisation.set_shape(INPUT_NAME, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(optimisation)
    if timing_cache is not None:
        known = timing_cache.read_bytes() if timing_cache.exists() else b""
        config.set_timing_cache(config.create_timing_cache(known), False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(f"TensorRT failed to build an engine for {model_path} ({profile.describe()})")
    if timing_cache is not None:
        timings = bytes(config.get_timing_cache().serialize())
        partial = timing_cache.with_name(f"{timing_cache.name}.{os.getpid()}.tmp")
        partial.write_bytes(timings)
        partial.replace(timing_cache)
    return bytes(plan)
