"""TensorRT on a real GPU (skipped where TensorRT does not import: every machine this project has had).
The same checks as the CPU stand-in's (tests/engines/test_tensorrt_runner.py), against the real thing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines import create_engine, resolve_model
from engines.tensorrt_backend import TensorRTEngine
from tests.media import psnr


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["lite", "lite-causal"])
def test_tensorrt_fp16_matches_onnx_runtime_within_45_db_alone_and_batched(name: str, tmp_path: Path) -> None:
    from tools.gpu_scene import SceneFrames

    source = SceneFrames(642, 362)  # not a multiple of the model's: padding on the host, crop after
    noisy = [source.pair(index)[1] for index in range(7)]
    windows = [noisy[start : start + 5] for start in range(3)]
    with create_engine("cpu", name, int8=False) as reference, \
            create_engine("tensorrt", name, cache_dir=tmp_path) as engine:
        assert isinstance(engine, TensorRTEngine)
        batched = engine.infer_batch(windows)
        for window, together in zip(windows, batched, strict=True):
            alone, theirs = engine.infer(window), reference.infer(window)
            assert psnr(alone, theirs) >= 45.0 and psnr(together, theirs) >= 45.0
    assert len(list(tmp_path.glob("*.engine"))) == 1


@pytest.mark.gpu
def test_tensorrt_int8_from_a_calibration_of_degraded_frames_stays_close(tmp_path: Path) -> None:
    from tests.media import clean_frames, write_h264
    from tools.calibration import calibration_windows
    from tools.gpu_scene import SceneFrames

    clip = write_h264(tmp_path / "clip.mp4", clean_frames(640, 360, 24), crf=12)
    engine = TensorRTEngine(resolve_model("lite"), cache_dir=tmp_path, precision="int8",
                            calibration=calibration_windows([clip], 5, 8, windows=16))
    source = SceneFrames(640, 360, seed=5)
    pairs = [source.pair(index) for index in range(5)]
    with engine, create_engine("cpu", "lite", int8=False) as reference:
        ours, theirs = engine.infer([noisy for _, noisy in pairs]), reference.infer([noisy for _, noisy in pairs])
        clean = pairs[2][0]
        assert psnr(ours, theirs) >= 35.0
        assert psnr(ours, clean) >= psnr(pairs[2][1], clean) + 3.0  # still restores
    assert np.all([path.stat().st_size > 0 for path in tmp_path.glob("calibration-*.cache")])
