"""INT8 calibration data for TensorRT: windows of real frames, degraded as cameras degrade them.

Each clip gives ``windows`` consecutive sliding windows of 640x360 frames, degraded with one draw from a
generator seeded with ``seed`` (1 by default, so a calibration cache is reproducible): Gaussian noise of
σ 5-30, then, for two clips in three, an x264 round trip at CRF 23-37 (BT.601 tv range, as cameras send).
The windows are in the layout of the TensorRT engine's uint8 input (``engines.uint8_io``).

    python -m tools.build_engine --precision int8 --calibration ../shared/media/clips/*.mp4
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from engines.uint8_io import pack_uint8
from tools import degrade

CALIBRATION_SIZE = (640, 360)  # (W, H): the calibration profile's frame size


def degrade_clip(frames: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One camera-like degradation of ``frames`` (uint8 [T, H, W, 3]) drawn from ``rng``, and what it was."""
    sigma = float(rng.uniform(5.0, 30.0))
    noisy = degrade.add_gaussian_noise(frames, sigma, rng)
    if rng.uniform() < 2 / 3:
        crf = int(rng.integers(23, 38))
        return degrade.x264_roundtrip(noisy, crf, preset="veryfast", bframes=0, threads=1), f"σ{sigma:.0f}+crf{crf}"
    return noisy, f"σ{sigma:.0f}"


def calibration_windows(clips: Sequence[Path], window: int, multiple: int, windows: int = 8,
                        seed: int = 1) -> Iterator[np.ndarray]:
    """uint8 batches of ``calibration_shape(window, multiple)``: ``windows`` sliding windows from the start
    of each clip (640x360 frames, edge-padded to the model's multiple)."""
    rng = np.random.default_rng(seed)
    width, height = CALIBRATION_SIZE
    for clip in clips:
        frames = degrade.read_clip(clip, 0, window + windows - 1, size=(width, height))
        if len(frames) < window:
            raise ValueError(f"{clip}: {len(frames)} frames, a calibration window needs {window}")
        degraded, _ = degrade_clip(frames, rng)
        for start in range(len(degraded) - window + 1):
            yield pack_uint8([list(degraded[start:start + window])], multiple).copy()
