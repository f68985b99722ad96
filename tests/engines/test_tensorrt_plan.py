"""What the TensorRT backend decides without a GPU: its optimisation profiles, which profile a call
uses, the engine cache key, the INT8 calibration data, and its refusal where TensorRT is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines import DEFAULT_MODEL, EngineError, activate_engine, create_engine
from engines.processing import padded_size
from engines.tensorrt_backend import TensorRTEngine, tensorrt_available
from engines.tensorrt_build import (
    DEFAULT_CLASSES,
    SizeClass,
    cache_key_for,
    calibration_cache_path,
    calibration_shape,
    plan_profiles,
    select_profile,
)
from tests.media import add_noise, clean_frames, write_h264
from tools.calibration import calibration_windows


def test_profiles_cover_the_scheduler_batches_and_every_size_up_to_4k() -> None:
    profiles = plan_profiles(window=5, multiple=8, max_batch=8)
    assert len(profiles) == len(DEFAULT_CLASSES)
    small, hd, uhd = profiles
    assert small.min == (5, 8, 8, 3) and small.opt == (20, 360, 640, 3) and small.max == (40, 720, 1280, 3)
    assert hd.max == (20, 1088, 1920, 3) and uhd.max == (5, 2160, 3840, 3)
    # a batch of 8 cameras at 360p, 720p or in 576-pixel tiles; 1080p in fours; 4K alone
    for batch, (height, width), expected in [(8, (360, 640), 0), (1, (720, 1280), 0), (8, (576, 576), 0),
                                             (4, (1080, 1920), 1), (1, (1080, 1920), 1), (1, (2160, 3840), 2)]:
        padded = padded_size(height, width, 8)
        assert select_profile(profiles, (5 * batch, *padded, 3)) == expected
    for refused in [(5 * 9, 360, 640, 3), (5 * 5, 1088, 1920, 3), (10, 2160, 3840, 3), (5, 2168, 3840, 3)]:
        with pytest.raises(EngineError, match="fits none"):
            select_profile(profiles, refused)


def test_profiles_follow_the_model_and_the_batch_limit() -> None:
    profiles = plan_profiles(window=3, multiple=16, max_batch=2)
    assert [profile.max[0] for profile in profiles] == [6, 6, 3]
    assert profiles[0].opt == (6, 368, 640, 3)  # 360 padded to the model's 16
    assert all(side % 16 == 0 for profile in profiles for side in profile.max[1:3])
    one = plan_profiles(5, 8, 8, [SizeClass((720, 1280), (720, 1280), 4, opt_batch=8)])
    assert one[0].opt[0] == 20  # the tuned batch never exceeds the class's largest
    with pytest.raises(EngineError):
        plan_profiles(0, 8)


def test_the_cache_key_changes_with_everything_that_shapes_the_engine() -> None:
    profiles = plan_profiles(5, 8)
    base = cache_key_for(b"model", profiles, "fp16", "10.3.0", "NVIDIA H200-sm90")
    assert base.filename() == cache_key_for(b"model", profiles, "fp16", "10.3.0", "NVIDIA H200-sm90").filename()
    changed = [
        cache_key_for(b"other model", profiles, "fp16", "10.3.0", "NVIDIA H200-sm90"),
        cache_key_for(b"model", plan_profiles(5, 8, 4), "fp16", "10.3.0", "NVIDIA H200-sm90"),
        cache_key_for(b"model", profiles, "fp32", "10.3.0", "NVIDIA H200-sm90"),
        cache_key_for(b"model", profiles, "int8", "10.3.0", "NVIDIA H200-sm90", b"calibration A"),
        cache_key_for(b"model", profiles, "int8", "10.3.0", "NVIDIA H200-sm90", b"calibration B"),
        cache_key_for(b"model", profiles, "fp16", "10.4.0", "NVIDIA H200-sm90"),
        cache_key_for(b"model", profiles, "fp16", "10.3.0", "Orin-sm87"),
    ]
    names = {key.filename() for key in changed}
    assert len(names) == len(changed) and base.filename() not in names
    with pytest.raises(EngineError, match="precision"):
        cache_key_for(b"model", profiles, "int4", "10.3.0", "gpu")
    assert calibration_cache_path(Path("/c"), b"model") != calibration_cache_path(Path("/c"), b"other model")


def test_calibration_windows_are_real_degraded_frames_and_repeatable(tmp_path: Path) -> None:
    clean = clean_frames(640, 360, 8, seed=5)
    clip = write_h264(tmp_path / "clip.mp4", clean, crf=12)
    first = list(calibration_windows([clip], window=5, multiple=8, windows=3))
    again = list(calibration_windows([clip], window=5, multiple=8, windows=3))
    assert len(first) == 3 and all(batch.shape == (5, 360, 640, 3) and batch.dtype == np.uint8 for batch in first)
    assert all((a == b).all() for a, b in zip(first, again, strict=True))  # seed 1: the same cache every time
    assert (first[1][:4] == first[0][1:]).all()  # sliding windows of consecutive frames
    error = np.abs(first[0][2].astype(float) - clean[2].astype(float)).mean()
    assert 2.0 < error < 40.0  # degraded (noise, maybe a CRF round trip), still the scene
    assert first[0].shape == calibration_shape(5, 8)
    padded = next(calibration_windows([clip], window=5, multiple=16, windows=1))
    assert padded.shape == calibration_shape(5, 16) == (5, 368, 640, 3)  # the calibration profile's shape
    other_seed = next(calibration_windows([clip], window=5, multiple=8, windows=1, seed=2))
    assert not (other_seed == first[0]).all()


@pytest.mark.skipif(tensorrt_available(), reason="checks the refusal where TensorRT is absent")
def test_without_tensorrt_the_engine_refuses_at_activation_and_auto_takes_the_cpu() -> None:
    engine = create_engine("tensorrt", DEFAULT_MODEL, tensorrt_int8=True)
    assert isinstance(engine, TensorRTEngine) and engine.precision == "int8" and engine.max_batch == 8
    with pytest.raises(EngineError, match="TensorRT is not installed"):
        engine.activate()
    fallback = activate_engine("auto", DEFAULT_MODEL, threads=1, candidates=["tensorrt", "cpu"], tensorrt_int8=True)
    try:
        assert fallback.backend == "cpu"
        window = add_noise(clean_frames(64, 48, 5), 10)
        assert fallback.infer(window).shape == (48, 64, 3)
    finally:
        fallback.deactivate()
