"""A CPU stand-in for the parts of TensorRT 10 and cuda-python's runtime that ``engines.tensorrt_backend``
calls, so that its own logic (build and cache, profiles, slots, pinned buffers, packing, two calls at once)
runs in CI. "Device" memory is host memory; a "built engine" is the wrapped ONNX model and its profiles,
run by ONNX Runtime. It checks what TensorRT checks (shapes inside the bound profile, tensor addresses
set, names known) and nothing about GPU behaviour: that is tools/gpu_check.py's job on a real GPU.
"""

from __future__ import annotations

import ctypes
import json
import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort

from engines.uint8_io import U8_INPUT, U8_OUTPUT


class Cudart:
    """cudaMalloc / cudaMallocHost / cudaMemcpy* / streams on host memory; every result is (error, value)."""

    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self) -> None:
        self.buffers: dict[int, Any] = {}
        self.streams = 0
        self.copies = 0
        self.lock = threading.Lock()

    def _alloc(self, size: int) -> tuple[int, int]:
        buffer = ctypes.create_string_buffer(size)
        with self.lock:
            self.buffers[ctypes.addressof(buffer)] = buffer
        return 0, ctypes.addressof(buffer)

    def cudaMalloc(self, size: int) -> tuple[int, int]:
        return self._alloc(size)

    def cudaMallocHost(self, size: int) -> tuple[int, int]:
        return self._alloc(size)

    def _free(self, pointer: int) -> tuple[int]:
        with self.lock:
            if self.buffers.pop(int(pointer), None) is None:
                return (1,)  # cudaErrorInvalidValue: a double free or a pointer never allocated
        return (0,)

    def cudaFree(self, pointer: int) -> tuple[int]:
        return self._free(pointer)

    def cudaFreeHost(self, pointer: int) -> tuple[int]:
        return self._free(pointer)

    def _known(self, pointer: int, count: int) -> bool:
        with self.lock:
            return any(start <= pointer and pointer + count <= start + len(buffer)
                       for start, buffer in self.buffers.items())

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: int, stream: int) -> tuple[int]:
        return self.cudaMemcpy(dst, src, count, kind)

    def cudaMemcpy(self, dst: int, src: int, count: int, kind: int) -> tuple[int]:
        device = dst if kind == 1 else src
        if not self._known(int(device), count):
            return (1,)
        ctypes.memmove(int(dst), int(src), count)
        self.copies += 1
        return (0,)

    cudaStreamNonBlocking = 1

    def cudaStreamCreateWithFlags(self, flags: int) -> tuple[int, int]:
        if flags != self.cudaStreamNonBlocking:
            return 1, 0
        with self.lock:
            self.streams += 1
            return 0, 1000 + self.streams

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        return (0,)

    def cudaStreamDestroy(self, stream: int) -> tuple[int]:
        with self.lock:
            self.streams -= 1
        return (0,)

    def cudaGetDeviceProperties(self, device: int) -> tuple[int, Any]:
        return 0, SimpleNamespace(name=b"CPU stand-in\x00\x00", major=0, minor=0)


class Context:
    def __init__(self, engine: CudaEngine) -> None:
        self.engine = engine
        self.profile = 0  # as TensorRT: a new context starts on profile 0
        self.shape: tuple[int, ...] | None = None
        self.addresses: dict[str, int] = {}
        self.runs = 0

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        """As TensorRT's Python binding: an index out of range raises (contexts may share a profile, as
        TensorRT 10 allows by default)."""
        if not 0 <= index < len(self.engine.profiles):
            raise RuntimeError(f"profile index {index} out of range")
        self.profile, self.shape = index, None
        return True

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        if name != U8_INPUT:
            return False
        low, _, high = self.engine.profiles[self.profile]
        if not all(a <= b <= c for a, b, c in zip(low, shape, high, strict=True)):
            return False
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name != U8_OUTPUT:
            raise ValueError(f"no tensor {name}")
        if self.shape is None:
            return (-1, -1, -1, 3)  # as TensorRT: dynamic dimensions unknown until the input shape is set
        frames, height, width, _ = self.shape
        scale = self.engine.scale
        return (frames // self.engine.window, height * scale, width * scale, 3)

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = int(address)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        if self.shape is None or set(self.addresses) != {U8_INPUT, U8_OUTPUT}:
            return False
        size = int(np.prod(self.shape))
        frames = np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(self.addresses[U8_INPUT]))
        (out,) = self.engine.session.run([U8_OUTPUT], {U8_INPUT: frames.reshape(self.shape).copy()})
        target = (ctypes.c_uint8 * out.size).from_address(self.addresses[U8_OUTPUT])
        ctypes.memmove(target, out.ctypes.data, out.nbytes)
        self.runs += 1
        self.engine.runs_by_profile[self.profile] = self.engine.runs_by_profile.get(self.profile, 0) + 1
        return True


class CudaEngine:
    def __init__(self, plan: bytes) -> None:
        header, _, model = plan.partition(b"\n")
        meta = json.loads(header)
        self.profiles = [tuple(tuple(shape) for shape in profile) for profile in meta["profiles"]]
        self.precision = meta["precision"]
        self.window, self.scale = meta["window"], meta["scale"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.contexts: list[Context] = []
        self.strategies: list[Any] = []  # the allocation strategy each context was made with
        self.runs_by_profile: dict[int, int] = {}

    def create_execution_context(self, strategy: Any = "STATIC") -> Context:
        self.strategies.append(strategy)
        context = Context(self)
        self.contexts.append(context)
        return context


class TensorRT:
    """``tensorrt`` as the backend uses it. Builds record what they were asked; plans carry the profiles."""

    __version__ = "10.0-cpu-stand-in"
    Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})
    MemoryPoolType = SimpleNamespace(WORKSPACE=0)
    BuilderFlag = SimpleNamespace(FP16="fp16", INT8="int8")
    ExecutionContextAllocationStrategy = SimpleNamespace(STATIC="STATIC", ON_PROFILE_CHANGE="ON_PROFILE_CHANGE")

    def __init__(self, window: int, scale: int = 1) -> None:
        self.window, self.scale = window, scale
        self.builds: list[dict[str, Any]] = []
        self.calibration_means: list[float] = []  # the mean of each calibration batch read from "device" memory
        outer = self

        class Runtime:
            def __init__(self, logger: Any) -> None:
                pass

            def deserialize_cuda_engine(self, plan: bytes) -> CudaEngine | None:
                return CudaEngine(plan) if plan.startswith(b"{") else None

        class OnnxParser:
            def __init__(self, network: dict[str, Any], logger: Any) -> None:
                self.network = network
                self.num_errors = 0

            def parse(self, model: bytes) -> bool:
                self.network["model"] = model
                return True

        class Profile:
            def __init__(self) -> None:
                self.shape: tuple[Any, ...] = ()

            def set_shape(self, name: str, low: Any, opt: Any, high: Any) -> None:
                if name != U8_INPUT or not all(a <= b <= c for a, b, c in zip(low, opt, high, strict=True)):
                    raise ValueError(f"bad profile for {name}: {low} {opt} {high}")
                self.shape = (tuple(low), tuple(opt), tuple(high))

        class Config:
            def __init__(self) -> None:
                self.flags: set[str] = set()
                self.profiles: list[Profile] = []
                self.int8_calibrator: Any = None
                self.calibration_profile: Profile | None = None
                self.timing = b""

            def set_memory_pool_limit(self, pool: int, size: int) -> None:
                pass

            def set_flag(self, flag: str) -> None:
                self.flags.add(flag)

            def add_optimization_profile(self, profile: Profile) -> int:
                self.profiles.append(profile)
                return len(self.profiles) - 1

            def set_calibration_profile(self, profile: Profile) -> bool:
                self.calibration_profile = profile
                return True

            def create_timing_cache(self, data: bytes) -> bytes:
                return bytes(data)

            def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> None:
                self.timing = cache

            def get_timing_cache(self) -> Any:
                return SimpleNamespace(serialize=lambda: self.timing + b"+timings")

        class Builder:
            def __init__(self, logger: Any) -> None:
                pass

            def create_network(self, flags: int) -> dict[str, Any]:
                return {}

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: dict[str, Any], config: Config) -> bytes:
                calibrated = 0
                if "int8" in config.flags:  # calibrate: read the cache, else run every batch the calibrator gives
                    calibrator = config.int8_calibrator
                    if calibrator.read_calibration_cache() is None:
                        if config.calibration_profile is None:
                            raise ValueError("INT8 with dynamic shapes needs a calibration profile")
                        shape = config.calibration_profile.shape[1]
                        while (pointers := calibrator.get_batch([U8_INPUT])) is not None:
                            size = int(np.prod(shape))  # TensorRT reads the profile's opt shape from the pointer
                            batch = np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(pointers[0]))
                            outer.calibration_means.append(float(batch.mean()))
                            calibrated += 1
                        calibrator.write_calibration_cache(f"calibrated on {calibrated} batches".encode())
                outer.builds.append({"flags": sorted(config.flags), "profiles": len(config.profiles),
                                     "calibrated": calibrated, "timing_in": config.timing})
                precision = "int8" if "int8" in config.flags else "fp16" if "fp16" in config.flags else "fp32"
                header = json.dumps({"profiles": [profile.shape for profile in config.profiles],
                                     "precision": precision, "window": outer.window, "scale": outer.scale})
                return header.encode() + b"\n" + network["model"]

        class Calibrator:
            def __init__(self) -> None:
                pass

        self.Runtime, self.OnnxParser, self.Builder = Runtime, OnnxParser, Builder
        self.IInt8EntropyCalibrator2 = Calibrator
