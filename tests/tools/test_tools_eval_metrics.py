"""Eval metrics on inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
from synthetic_media import moving_frames

from tools.eval import DEGRADATIONS, degradation_seed, flicker, psnr, ssim


def test_psnr_known_values() -> None:
    clean = np.full((2, 8, 8, 3), 100, np.uint8)
    assert math.isclose(psnr(clean + 1, clean), 10 * math.log10(255**2), abs_tol=1e-9)
    off = clean.copy()
    off[1] += 10
    expected = (10 * math.log10(255**2 / 1e-10) + 10 * math.log10(255**2 / 100)) / 2
    assert math.isclose(psnr(off, clean), expected, rel_tol=1e-9)


def test_ssim_identity_and_noise() -> None:
    clean = moving_frames(2, 32, 32, seed=0)
    assert math.isclose(ssim(clean, clean), 1.0, abs_tol=1e-9)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    assert 0.0 < ssim(noisy, clean) < 0.9
    assert ssim(noisy, clean) < ssim(((noisy.astype(int) + clean) // 2).astype(np.uint8), clean)


def test_flicker_known_values() -> None:
    clean = np.full((4, 8, 8, 3), 100, np.uint8)
    assert flicker(clean, clean) == 0.0
    assert flicker(clean + 5, clean) == 0.0  # a constant bias does not flicker
    alternating = clean.copy()
    alternating[1::2] += 4
    assert math.isclose(flicker(alternating, clean), 4.0)


def test_a_degradation_gets_the_same_noise_in_a_subset_run() -> None:
    """Seeds follow the default list, not the requested one: evaluating only low light (or the degradations in
    another order) degrades each clip exactly as the full run does, so PSNR from both runs compares."""
    full = {name: degradation_seed(name, list(DEGRADATIONS), 0) for name in DEGRADATIONS}
    assert len(set(full.values())) == len(full)
    assert degradation_seed("lowlight", ["lowlight"], 0) == full["lowlight"]
    assert degradation_seed("lowlight", ["crf37", "lowlight", "sigma15"], 0) == full["lowlight"]
    extra = degradation_seed("sigma50", ["sigma15", "sigma50"], 0)
    assert extra not in full.values()
