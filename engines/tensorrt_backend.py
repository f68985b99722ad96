"""TensorRT 10+ on NVIDIA GPUs (x86 and Jetson): named tensors, ``execute_async_v3``, CUDA streams.

The engine is built at activation (never on a frame) from the model wrapped by ``engines.uint8_io``: uint8
frames go in and uint8 frames come out, the conversion to and from fp16 runs on the GPU, fused by TensorRT
with the first and last layers. The build has one optimisation profile per frame-size class, each with the
batch sizes the shared scheduler sends (``plan_profiles``); a call picks the smallest profile that admits
its shape (``select_profile``). Precision fp16 by default, fp32, or INT8 (fp16 where INT8 has no kernel)
from a calibration cache made from real degraded frames (``tools/build_engine.py --precision int8``). Built engines
are cached under a key of everything that shaped them, built under a file lock, with TensorRT's timing
cache shared (``engines.cache``).

Each call takes a *slot*: its own execution context, CUDA stream, pinned host buffers and device buffers.
Two slots run at once (``concurrent_calls``: the scheduler runs two workers), so one batch's upload and
compute overlap the previous batch's download and the host-side packing of the next. A slot's context is
bound for good to its size class's profile; TensorRT 10 lets contexts share a profile (profile sharing is
on by default since 10.0), and each context allocates only what its profile needs
(``ON_PROFILE_CHANGE``). Needs the ``gpu`` extra: ``tensorrt`` and ``cuda-python``.

Nothing in this module has run on a GPU in this project's CI: what runs without one (profiles, selection,
cache keys, the wrapper on ONNX Runtime) is tested; the rest is checked by ``tools/gpu_check.py``.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import Engine, EngineError
from engines.cache import cached_engine_path, load_or_build, timing_cache_path
from engines.onnx_cpu import read_model_info
from engines.processing import padded_size
from engines.tensorrt_build import (
    DEFAULT_CLASSES,
    DEFAULT_MAX_BATCH,
    PRECISIONS,
    SizeClass,
    _check,
    build_serialized_engine,
    cache_key_for,
    calibration_cache_path,
    calibration_shape,
    make_calibrator,
    plan_profiles,
    select_profile,
)
from engines.uint8_io import U8_INPUT, U8_OUTPUT, pack_uint8, wrapped_model_bytes

log = logging.getLogger(__name__)

SLOTS = 2  # calls in flight at once: consecutive batches overlap (upload + compute beside download)


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


@dataclass
class _Slot:
    """One call's GPU state: a context bound for good to its size class's profile (the engine's profile
    index is the class), a stream, pinned host and device buffers."""

    size_class: int
    context: Any
    stream: Any
    host_in: tuple[int, int] = (0, 0)  # (pointer, bytes) pinned
    host_out: tuple[int, int] = (0, 0)
    device_in: tuple[int, int] = (0, 0)
    device_out: tuple[int, int] = (0, 0)
    shape: tuple[int, ...] | None = None
    out_shape: tuple[int, ...] = ()


class TensorRTEngine(Engine):
    """Built (or loaded from the cache) at activation: a failed build is an ``EngineError`` from
    ``activate`` (so ``auto`` falls back to PyTorch CUDA or the CPU), never an error on a frame."""

    backend = "tensorrt"
    device = "cuda"
    concurrent_calls = SLOTS
    preferred_batch = 4

    def __init__(
        self,
        model_path: Path,
        fp16: bool = True,
        cache_dir: Path | None = None,
        precision: str | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        classes: Sequence[SizeClass] = DEFAULT_CLASSES,
        calibration: Iterable[np.ndarray] | None = None,
    ) -> None:
        """``precision`` (fp16, fp32, int8) overrides ``fp16``; ``calibration``: uint8 batches in the
        wrapped input's layout for an INT8 build without a calibration cache (tools/build_engine.py)."""
        super().__init__()
        self.model_path = model_path
        self.precision = precision or ("fp16" if fp16 else "fp32")
        if self.precision not in PRECISIONS:
            raise EngineError(f"precision {self.precision!r}: one of {', '.join(PRECISIONS)}")
        self.cache_dir = cache_dir or Path("~/.cache/streamer/engines").expanduser()
        self.info = read_model_info(model_path)
        if self.info.recurrent:
            raise EngineError(
                f"{self.info.name} is a recurrent model: the tensorrt backend does not feed its state yet; use the cpu or cuda (PyTorch) backend"
            )
        self.profiles = plan_profiles(self.info.window, self.info.pad_multiple, max_batch, classes)
        self.max_batch = max(profile.max[0] for profile in self.profiles) // self.info.window
        self.calibration = calibration
        self._trt: Any = None
        self._cudart: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._free: dict[int, list[_Slot]] = {}  # by size class
        self._made: dict[int, int] = {}  # slots made per size class
        self._slots: list[_Slot] = []
        self._slots_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------------
    def _modules(self) -> tuple[Any, Any]:
        """TensorRT and cuda-python's runtime (imported here: optional, and heavy)."""
        try:
            import tensorrt as trt
        except ImportError:
            raise EngineError("TensorRT is not installed (pip install 'streamer[gpu]')") from None
        return trt, _cudart()

    def _activate(self) -> None:
        trt, self._cudart = self._modules()
        self._trt = trt
        try:
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self._engine = self._load_or_build()
            self._free = {size_class: [] for size_class in range(len(self.profiles))}
            self._made = dict.fromkeys(range(len(self.profiles)), 0)
            self._free[0] = [self._new_slot(0) for _ in range(SLOTS)]  # made now, not on frames
            self._made[0] = SLOTS
        except EngineError:
            self._deactivate()
            raise
        except Exception as error:  # TensorRT and CUDA raise their own kinds
            self._deactivate()
            raise EngineError(f"TensorRT engine for {self.model_path.name} failed: {error}") from None

    def _deactivate(self) -> None:
        if self._cudart is not None:
            for slot in self._slots:
                self._release(slot)
        self._slots, self._free, self._made = [], {}, {}
        self._engine = None
        self._runtime = None

    def describe(self) -> str:
        return f"{super().describe()} [{self.precision}, {len(self.profiles)} profiles, batches to {self.max_batch}]"

    # -- inference -------------------------------------------------------------------------------------
    def _infer(self, window: list[np.ndarray]) -> np.ndarray:
        return self._run([window])[0]

    def _infer_batch(self, windows: list[list[np.ndarray]], streams: list[str]) -> list[np.ndarray]:
        return self._run(windows)

    def _run(self, windows: list[list[np.ndarray]]) -> list[np.ndarray]:
        """The batch in one call when a profile holds it, else in chunks of the most windows of this frame
        size a profile holds (the scheduler batches up to ``max_batch``, which only small frames reach)."""
        height, width = windows[0][0].shape[:2]
        padded_h, padded_w = padded_size(height, width, self.info.pad_multiple)
        window = self.info.window
        limit = max((profile.max[0] // window for profile in self.profiles
                     if profile.admits((window, padded_h, padded_w, 3))), default=0)
        if limit == 0:
            select_profile(self.profiles, (window, padded_h, padded_w, 3))  # raises, naming the largest size
        if len(windows) > limit:
            return [image for start in range(0, len(windows), limit) for image in self._run(windows[start:start + limit])]
        shape = (len(windows) * window, padded_h, padded_w, 3)
        slot = self._take(select_profile(self.profiles, shape))
        try:
            return self._run_on(slot, windows, shape, height, width)
        finally:
            with self._slots_lock:
                self._free[slot.size_class].append(slot)

    def _run_on(self, slot: _Slot, windows: list[list[np.ndarray]], shape: tuple[int, ...],
                height: int, width: int) -> list[np.ndarray]:
        cudart = self._cudart
        if slot.shape != shape:
            self._set_shape(slot, shape)
        in_bytes = int(np.prod(shape))
        host_in = _pinned_view(slot.host_in[0], in_bytes)
        pack_uint8(windows, self.info.pad_multiple, out=host_in)  # straight into pinned memory
        out_bytes = int(np.prod(slot.out_shape))
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart.cudaMemcpyAsync(slot.device_in[0], slot.host_in[0], in_bytes, h2d, slot.stream))
        if not slot.context.execute_async_v3(slot.stream):
            raise EngineError("TensorRT execute_async_v3 failed")
        _check(cudart.cudaMemcpyAsync(slot.host_out[0], slot.device_out[0], out_bytes, d2h, slot.stream))
        _check(cudart.cudaStreamSynchronize(slot.stream))
        out = _pinned_view(slot.host_out[0], out_bytes).reshape(slot.out_shape)
        scale = self.info.scale
        # copies, always: the pinned buffer is the slot's, and its next call overwrites it (a crop that spans
        # whole rows is already contiguous, and ascontiguousarray would hand out the buffer itself)
        return [out[index, : height * scale, : width * scale].copy() for index in range(len(windows))]

    # -- slots -----------------------------------------------------------------------------------------
    def _take(self, size_class: int) -> _Slot:
        """A free slot of ``size_class``, made on its first use; the engine's call limit (``SLOTS`` calls at
        once) means a class never needs more than ``SLOTS`` slots."""
        with self._slots_lock:
            free = self._free[size_class]
            if free:
                return free.pop()
            if self._made[size_class] >= SLOTS:
                raise EngineError(f"all {SLOTS} slots of profile class {size_class} are busy")
            self._made[size_class] += 1  # reserved before the (slow) context is made outside the lock
        try:
            return self._new_slot(size_class)
        except BaseException:
            with self._slots_lock:
                self._made[size_class] -= 1
            raise

    def _new_slot(self, size_class: int) -> _Slot:
        """A context on ``size_class``'s profile (activation memory for that profile only), a stream that
        does not wait on the legacy default stream."""
        trt, cudart = self._trt, self._cudart
        strategy = getattr(trt, "ExecutionContextAllocationStrategy", None)
        context = (self._engine.create_execution_context(strategy.ON_PROFILE_CHANGE) if strategy is not None
                   else self._engine.create_execution_context())
        if context is None:
            raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")
        stream = _check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking))
        slot = _Slot(size_class, context, stream)
        try:  # TensorRT's Python binding raises where the C++ API returns false
            selected = context.set_optimization_profile_async(size_class, stream)
        except Exception as error:
            selected, cause = False, f": {error}"
        else:
            cause = ""
        if not selected:
            self._release(slot)
            raise EngineError(f"TensorRT refused optimisation profile {size_class}{cause}")
        with self._slots_lock:
            self._slots.append(slot)
        return slot

    def _set_shape(self, slot: _Slot, shape: tuple[int, ...]) -> None:
        """A new shape on this slot: tell the context, grow the buffers (never shrink: shapes come back)."""
        context = slot.context
        slot.shape = None  # until every step below has succeeded
        if not context.set_input_shape(U8_INPUT, shape):
            raise EngineError(f"TensorRT refused the input shape {shape} (profile {slot.size_class})")
        slot.out_shape = tuple(context.get_tensor_shape(U8_OUTPUT))
        in_bytes, out_bytes = int(np.prod(shape)), int(np.prod(slot.out_shape))
        cudart = self._cudart
        if in_bytes > min(slot.host_in[1], slot.device_in[1]):  # both, after a failed allocation
            self._free_buffer(slot, "host", slot.host_in)
            self._free_buffer(slot, "device", slot.device_in)
            slot.host_in = slot.device_in = (0, 0)  # freed: never freed twice if an allocation below fails
            slot.host_in = (int(_check(cudart.cudaMallocHost(in_bytes))), in_bytes)
            slot.device_in = (int(_check(cudart.cudaMalloc(in_bytes))), in_bytes)
        if out_bytes > min(slot.host_out[1], slot.device_out[1]):  # both, after a failed allocation
            self._free_buffer(slot, "host", slot.host_out)
            self._free_buffer(slot, "device", slot.device_out)
            slot.host_out = slot.device_out = (0, 0)
            slot.host_out = (int(_check(cudart.cudaMallocHost(out_bytes))), out_bytes)
            slot.device_out = (int(_check(cudart.cudaMalloc(out_bytes))), out_bytes)
        context.set_tensor_address(U8_INPUT, slot.device_in[0])
        context.set_tensor_address(U8_OUTPUT, slot.device_out[0])
        slot.shape = shape

    def _free_buffer(self, slot: _Slot, kind: str, buffer: tuple[int, int]) -> None:
        if buffer[0]:
            (self._cudart.cudaFreeHost if kind == "host" else self._cudart.cudaFree)(buffer[0])

    def _release(self, slot: _Slot) -> None:
        if slot.stream is not None:
            self._cudart.cudaStreamSynchronize(slot.stream)
        for kind, buffer in (("host", slot.host_in), ("host", slot.host_out), ("device", slot.device_in),
                             ("device", slot.device_out)):
            self._free_buffer(slot, kind, buffer)
        if slot.stream is not None:
            self._cudart.cudaStreamDestroy(slot.stream)
        slot.context = slot.stream = None

    # -- engine build / cache --------------------------------------------------------------------------
    def gpu_name(self) -> str:
        props = _check(self._cudart.cudaGetDeviceProperties(0))
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return f"{name.strip(chr(0))}-sm{props.major}{props.minor}"

    def _load_or_build(self) -> Any:
        """The engine from the cache, else built (under the cache's lock). An INT8 build without a
        calibration cache calibrates on ``self.calibration`` first and is filed under the key of the
        calibration it made, where the next activation (a camera, no clips) finds it."""
        model_bytes = wrapped_model_bytes(self.model_path, self.info.window)
        calibration_path = calibration_cache_path(self.cache_dir, model_bytes)
        gpu = self.gpu_name()
        timing = timing_cache_path(self.cache_dir, self._trt.__version__, gpu)
        started = time.monotonic()

        def build() -> bytes:
            calibrator, shape = None, calibration_shape(self.info.window, self.info.pad_multiple)
            if self.precision == "int8":
                calibrator = make_calibrator(self._trt, self._cudart, self.calibration, calibration_path, shape)
            return build_serialized_engine(self._trt, model_bytes, self.profiles, self.precision, timing,
                                           calibrator, shape)

        calibration, plan = b"", None
        if self.precision == "int8":
            if not calibration_path.exists():
                if self.calibration is None:
                    raise EngineError(f"INT8 needs a calibration cache ({calibration_path}): make it with python -m "
                                      f"tools.build_engine --precision int8 --calibration CLIP --model {self.model_path}")
                plan = build()  # calibrates, and writes the calibration cache
                if not calibration_path.exists():
                    raise EngineError("INT8 calibration left no calibration cache (no calibration batches?)")
            calibration = calibration_path.read_bytes()
        key = cache_key_for(model_bytes, self.profiles, self.precision, self._trt.__version__, gpu, calibration)
        path = cached_engine_path(self.cache_dir, key)
        built_plan = plan
        engine, built = load_or_build(path, self._runtime.deserialize_cuda_engine,
                                      build if built_plan is None else lambda: built_plan)
        what = "built" if built else "loaded from cache"
        log.info("TensorRT engine %s in %.1f s: %s, %s, profiles %s (%s)", what, time.monotonic() - started,
                 self.model_path.name, self.precision, "; ".join(p.describe() for p in self.profiles), path)
        return engine


def _pinned_view(pointer: int, size: int) -> np.ndarray:
    """A numpy uint8 view of ``size`` bytes of host memory at ``pointer`` (pinned by cudaMallocHost)."""
    return np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(pointer))


