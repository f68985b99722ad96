"""The TensorRT backend's own logic run against a CPU stand-in for TensorRT and CUDA (tests/engines/
cpu_tensorrt.py): build and engine cache, timing cache, INT8 calibration cache, profile per call, slots with
pinned buffers, batches, two calls at once, and freeing everything. What only a GPU can show (speed, fp16
accuracy, TensorRT's own parsing) is tools/gpu_check.py's."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines import DEFAULT_MODEL, EngineError, create_engine
from engines.tensorrt_backend import SLOTS, TensorRTEngine
from engines.tensorrt_build import SizeClass
from tests.engines.cpu_tensorrt import Cudart, TensorRT
from tests.media import add_noise, clean_frames, write_h264
from tools.calibration import calibration_windows


class StandInEngine(TensorRTEngine):
    def __init__(self, trt: TensorRT, cudart: Cudart, **options: Any) -> None:
        super().__init__(DEFAULT_MODEL, **options)
        self.stand_in = (trt, cudart)

    def _modules(self) -> tuple[Any, Any]:
        return self.stand_in


def window_of(width: int, height: int, seed: int) -> list[np.ndarray]:
    return add_noise(clean_frames(width, height, 5, seed=seed), 12, seed=seed)


@pytest.fixture(scope="module")
def reference() -> Any:
    with create_engine("cpu", DEFAULT_MODEL, threads=1, int8=False) as engine:
        yield engine


def close_to(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


def test_built_once_cached_and_restoring_what_the_cpu_engine_restores(tmp_path: Path, reference: Any) -> None:
    trt, cudart = TensorRT(window=5), Cudart()
    engine = StandInEngine(trt, cudart, cache_dir=tmp_path)
    with engine:
        assert len(trt.builds) == 1 and trt.builds[0]["flags"] == ["fp16"] and trt.builds[0]["profiles"] == 3
        window = window_of(100, 60, seed=1)
        assert close_to(engine.infer(window), reference.infer(window))
        streams = cudart.streams
        with pytest.raises(EngineError, match="refused optimisation profile 7: profile index 7 out of range"):
            engine._new_slot(7)  # TensorRT's binding raises: an EngineError, and the stream made for it freed
        assert cudart.streams == streams and len(engine._slots) == SLOTS
    assert cudart.buffers == {} and cudart.streams == 0  # every pinned/device buffer and stream freed
    assert len(list(tmp_path.glob("*.engine"))) == 1 and len(list(tmp_path.glob("timing-*.cache"))) == 1
    again = StandInEngine(trt, Cudart(), cache_dir=tmp_path)
    with again:
        assert len(trt.builds) == 1  # loaded from the cache
        assert close_to(again.infer(window), reference.infer(window))
    StandInEngine(trt, Cudart(), cache_dir=tmp_path, precision="fp32").activate()
    assert len(trt.builds) == 2 and trt.builds[1]["flags"] == [] and trt.builds[1]["timing_in"].endswith(b"+timings")


def test_a_result_is_the_callers_and_never_changes_with_the_next_call(tmp_path: Path) -> None:
    with StandInEngine(TensorRT(window=5), Cudart(), cache_dir=tmp_path) as engine:
        first = engine.infer(window_of(64, 48, seed=1))  # a multiple of 8: the crop is the whole buffer
        kept = first.copy()
        engine.infer(window_of(64, 48, seed=2))
        engine.infer(window_of(64, 48, seed=3))
        assert (first == kept).all() and first.flags.owndata


def test_batches_take_the_smallest_profile_and_two_calls_run_at_once(tmp_path: Path, reference: Any) -> None:
    trt, cudart = TensorRT(window=5), Cudart()
    engine = StandInEngine(trt, cudart, cache_dir=tmp_path, max_batch=4)
    with engine:
        windows = [window_of(64, 48, seed) for seed in range(3)]
        results = engine.infer_batch(windows, ["a", "b", "c"])
        assert all(close_to(got, reference.infer(window)) for got, window in zip(results, windows, strict=True))
        large = window_of(1280, 728, seed=9)  # above the first profile's 720 rows: the second profile
        assert close_to(engine.infer(large), reference.infer(large))
        cuda_engine = engine._engine
        assert set(cuda_engine.runs_by_profile) == {0, 1}  # the profile index is the size class
        with pytest.raises(EngineError, match=r"must be 1\.\.4"):
            engine.infer_batch([window_of(64, 48, seed) for seed in range(5)])  # more than max_batch
        with pytest.raises(EngineError, match="fits none"):
            engine.infer([np.zeros((2168, 3840, 3), np.uint8)] * 5)  # above 4K
        errors: list[BaseException] = []
        running = threading.Barrier(2)
        # expected results made first, one at a time: the reference is not the engine under test
        work = {seed: [window_of(48 + 16 * (step % 2), 32, seed + step) for step in range(6)] for seed in (100, 200)}
        expected = {seed: [reference.infer(window) for window in windows] for seed, windows in work.items()}

        def caller(seed: int) -> None:
            try:
                running.wait(5)
                for window, want in zip(work[seed], expected[seed], strict=True):
                    assert close_to(engine.infer(window), want)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=caller, args=(seed,)) for seed in (100, 200)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert len(engine._slots) <= SLOTS * len(engine.profiles)
        assert all(slot.context.profile == slot.size_class for slot in engine._slots)  # two contexts share class 0
        assert sum(slot.size_class == 0 for slot in engine._slots) == SLOTS
        assert set(cuda_engine.strategies) == {"ON_PROFILE_CHANGE"}  # activation memory for its own profile only
    assert cudart.buffers == {} and cudart.streams == 0


def test_a_batch_larger_than_its_size_class_takes_goes_in_chunks(tmp_path: Path, reference: Any) -> None:
    classes = [SizeClass((32, 48), (48, 64), 4), SizeClass((96, 128), (96, 128), 2)]  # small, then 2 at a time
    with StandInEngine(TensorRT(window=5), Cudart(), cache_dir=tmp_path, classes=classes) as engine:
        assert engine.max_batch == 4
        windows = [window_of(128, 96, seed) for seed in range(4)]
        results = engine.infer_batch(windows)  # 4 windows of the large class: two calls of 2
        assert all(close_to(got, reference.infer(window)) for got, window in zip(results, windows, strict=True))
        assert engine._engine.runs_by_profile == {1: 2}


def test_int8_calibrates_on_real_degraded_frames_once_then_builds_from_the_cache(tmp_path: Path) -> None:
    trt = TensorRT(window=5)
    with pytest.raises(EngineError, match=r"tools\.build_engine --precision int8"):
        StandInEngine(trt, Cudart(), cache_dir=tmp_path, precision="int8").activate()
    clip = write_h264(tmp_path / "clip.mp4", clean_frames(640, 360, 8), crf=12)
    batches = calibration_windows([clip], window=5, multiple=8, windows=4)
    with StandInEngine(trt, Cudart(), cache_dir=tmp_path, precision="int8", calibration=batches) as engine:
        assert trt.builds[-1]["calibrated"] == 4 and "int8" in trt.builds[-1]["flags"]
        assert len(trt.calibration_means) == 4 and all(20 < mean < 235 for mean in trt.calibration_means)  # frames
        assert engine.describe().count("int8") >= 1
    (cache,) = tmp_path.glob("calibration-*.cache")
    assert cache.read_bytes() == b"calibrated on 4 batches"
    with StandInEngine(trt, Cudart(), cache_dir=tmp_path, precision="int8"):  # a camera: the cache, no clips
        assert len(trt.builds) == 1


def test_a_calibration_batch_of_the_wrong_shape_fails_the_build_naming_both_shapes(tmp_path: Path) -> None:
    wrong = [np.zeros((5, 352, 640, 3), np.uint8)]  # 360 rows padded to 352, not to the model's multiple
    engine = StandInEngine(TensorRT(window=5), Cudart(), cache_dir=tmp_path, precision="int8", calibration=wrong)
    with pytest.raises(EngineError, match=r"calibration batch is \(5, 352, 640, 3\), the calibration profile \(5, 360"):
        engine.activate()
    assert not list(tmp_path.glob("calibration-*.cache")) and not list(tmp_path.glob("*.engine"))


def test_a_failed_device_allocation_is_retried_on_the_next_call(tmp_path: Path, reference: Any) -> None:
    cudart = Cudart()
    with StandInEngine(TensorRT(window=5), cudart, cache_dir=tmp_path) as engine:
        allocate = cudart.cudaMalloc
        cudart.cudaMalloc = lambda size: (2, 0)  # type: ignore[method-assign]  # cudaErrorMemoryAllocation
        window = window_of(80, 48, seed=4)
        with pytest.raises(EngineError):
            engine.infer(window)
        cudart.cudaMalloc = allocate  # type: ignore[method-assign]
        assert close_to(engine.infer(window), reference.infer(window))  # the same slot, its buffers made now
    assert cudart.buffers == {}
