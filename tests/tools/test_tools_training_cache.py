"""Training caches (tools/training_cache.py): profiles, per-cache sampling weights, and loading several caches."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from synthetic_media import moving_frames

from tools import degrade, training_cache


def write_cache(path: Path, count: int, length: int, size: int = 16) -> None:
    rng = np.random.default_rng(count + length)
    targets = rng.integers(0, 256, (count, length, size, size, 3), dtype=np.uint8)
    np.savez(path, targets=targets, degraded=targets[::-1].copy())


def cache_args(paths: list[Path], weights: list[float] | None = None) -> argparse.Namespace:
    return argparse.Namespace(
        cache=paths, cache_profile=["mixed"], cache_weights=weights, seed=0, val_sequences=2
    )


def test_caches_load_with_validation_from_the_first_and_weights_per_cache(tmp_path: Path) -> None:
    write_cache(tmp_path / "a.npz", 10, 6)
    write_cache(tmp_path / "b.npz", 4, 6)
    targets, degraded, val_targets, val_degraded, weights = training_cache.load_caches(
        cache_args([tmp_path / "a.npz", tmp_path / "b.npz"], [1.0, 1.0])
    )
    assert targets.shape == degraded.shape == (12, 6, 16, 16, 3)
    assert val_targets.shape == val_degraded.shape == (2, 6, 16, 16, 3)
    with np.load(tmp_path / "a.npz") as first, np.load(tmp_path / "b.npz") as second:
        assert np.array_equal(val_targets, first["targets"][:2])
        assert np.array_equal(targets, np.concatenate([first["targets"][2:], second["targets"]]))
        assert np.array_equal(degraded, np.concatenate([first["degraded"][2:], second["degraded"]]))
    assert weights is not None and np.isclose(weights[:8].sum(), 0.5) and np.isclose(weights[8:].sum(), 0.5)


def test_caches_of_different_sequence_lengths_are_refused_naming_them(tmp_path: Path) -> None:
    write_cache(tmp_path / "long.npz", 8, 24)
    write_cache(tmp_path / "short.npz", 8, 12)
    with pytest.raises(SystemExit, match=r"long\.npz: 24 frames of 16x16, short\.npz: 12 frames of 16x16"):
        training_cache.load_caches(cache_args([tmp_path / "long.npz", tmp_path / "short.npz"]))


def test_cache_weights_give_each_cache_its_share() -> None:
    weights = training_cache.sequence_weights([6, 2], [1.0, 3.0])
    assert weights is not None and weights.shape == (8,)
    assert np.isclose(weights[:6].sum(), 0.25) and np.isclose(weights[6:].sum(), 0.75)
    assert training_cache.sequence_weights([6, 2], None) is None


@pytest.mark.parametrize("name", sorted(training_cache.CACHE_PROFILES))
def test_cache_profiles_draw_crf_and_noise_within_their_ranges(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = training_cache.CACHE_PROFILES[name]
    assert np.isclose(sum(profile.shares.values()), 1.0)
    encoded: list[int] = []

    def record_crf(
        frames: np.ndarray, crf: int, preset: str = "medium", bframes: int | None = None
    ) -> np.ndarray:
        encoded.append(crf)
        return frames

    monkeypatch.setattr(degrade, "x264_roundtrip", record_crf)
    rng = np.random.default_rng(1)
    clean = moving_frames(2, 16, 16, seed=5)
    for _ in range(1000):
        training_cache.degrade_for_cache(clean, rng, name)
    low = min(profile.codec_crf[0], profile.noise_codec_crf[0])
    high = max(profile.codec_crf[1], profile.noise_codec_crf[1])
    assert encoded and low <= min(encoded) and max(encoded) <= high
    # codec-only samples reach the top of the profile's range (the inclusive upper bound is drawn)
    assert max(encoded) == high
