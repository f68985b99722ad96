"""Engines are built at activation: ``auto`` falls back when a backend cannot be built, never per frame;
deactivation waits for an inference in flight."""

from __future__ import annotations

import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

import engines
from engines import EngineError, activate_engine
from engines.base import Engine, ModelInfo


def install_tensorrt_whose_build_fails(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """A TensorRT and CUDA runtime that import and report one GPU, whose engine build returns nothing
    (what TensorRT does when a build fails): the real backend code runs against it."""
    calls = {"builds": 0, "parses": 0}

    class Builder:
        def __init__(self, logger: object) -> None:
            pass

        def create_network(self, flags: int) -> object:
            return object()

        def create_builder_config(self) -> object:
            return types.SimpleNamespace(set_memory_pool_limit=lambda *args: None, set_flag=lambda flag: None,
                                         add_optimization_profile=lambda profile: 0,
                                         create_timing_cache=lambda data: data, set_timing_cache=lambda *args: True)

        def create_optimization_profile(self) -> object:
            return types.SimpleNamespace(set_shape=lambda *args: None)

        def build_serialized_network(self, network: object, config: object) -> None:
            calls["builds"] += 1
            return None

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: object, logger: object) -> None:
            pass

        def parse(self, data: bytes) -> bool:
            calls["parses"] += 1
            return True

    tensorrt = types.ModuleType("tensorrt")
    tensorrt.__version__ = "10.0.0-test"  # type: ignore[attr-defined]
    tensorrt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=0: None})  # type: ignore[attr-defined]
    tensorrt.Runtime = lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda data: None)  # type: ignore[attr-defined]
    tensorrt.Builder = Builder  # type: ignore[attr-defined]
    tensorrt.OnnxParser = OnnxParser  # type: ignore[attr-defined]
    tensorrt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)  # type: ignore[attr-defined]
    tensorrt.BuilderFlag = types.SimpleNamespace(FP16=1)  # type: ignore[attr-defined]
    runtime = types.ModuleType("cuda.bindings.runtime")
    runtime.cudaGetDeviceCount = lambda: (0, 1)  # type: ignore[attr-defined]
    runtime.cudaStreamNonBlocking = 1  # type: ignore[attr-defined]
    runtime.cudaStreamCreateWithFlags = lambda flags: (0, "stream")  # type: ignore[attr-defined]
    runtime.cudaStreamDestroy = lambda stream: (0,)  # type: ignore[attr-defined]
    runtime.cudaGetDeviceProperties = lambda device: (  # type: ignore[attr-defined]
        0, types.SimpleNamespace(name=b"Test GPU", major=8, minor=7))
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = runtime  # type: ignore[attr-defined]
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings  # type: ignore[attr-defined]
    for name, module in (("tensorrt", tensorrt), ("cuda", cuda), ("cuda.bindings", bindings),
                         ("cuda.bindings.runtime", runtime)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(engines, "nvidia_gpu_present", lambda: True)  # as if the driver's device files existed
    return calls


def test_auto_falls_back_to_the_cpu_when_the_tensorrt_build_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = install_tensorrt_whose_build_fails(monkeypatch)
    engine = activate_engine("auto", "lite", cache_dir=tmp_path)
    assert calls == {"builds": 1, "parses": 1}  # built once, at activation
    assert engine.backend == "cpu" and engine.active
    frames = [np.full((36, 64, 3), 100, np.uint8)] * engine.info.window
    for _ in range(3):
        assert engine.infer(frames).shape == (36, 64, 3)
    assert calls["builds"] == 1  # frames never trigger another build
    engine.deactivate()


def test_an_explicit_tensorrt_engine_that_cannot_be_built_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_tensorrt_whose_build_fails(monkeypatch)
    with pytest.raises(EngineError, match="failed to build"):
        activate_engine("tensorrt", "lite", cache_dir=tmp_path)


class SlowEngine(Engine):
    """Takes 0.4 s per window and records the order of inference and release."""

    backend = "slow"

    def __init__(self) -> None:
        super().__init__()
        self.info = ModelInfo(name="slow", window=1, reference_index=0)
        self.events: list[str] = []

    def _activate(self) -> None:
        self.events.append("activate")

    def _infer(self, window: list[np.ndarray]) -> np.ndarray:
        self.events.append("infer start")
        time.sleep(0.4)
        self.events.append("infer end")
        return window[0]

    def _deactivate(self) -> None:
        self.events.append("release buffers")


def test_deactivate_waits_for_the_inference_in_flight() -> None:
    engine = SlowEngine()
    engine.activate()
    worker = threading.Thread(target=engine.infer, args=([np.zeros((4, 4, 3), np.uint8)],))
    worker.start()
    while "infer start" not in engine.events:
        time.sleep(0.005)
    engine.deactivate()  # from another thread, mid-inference
    worker.join(5)
    assert engine.events == ["activate", "infer start", "infer end", "release buffers"]
    with pytest.raises(EngineError, match="after deactivate"):
        engine.infer([np.zeros((4, 4, 3), np.uint8)])
