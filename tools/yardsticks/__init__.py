"""Heavyweight single-frame denoisers that tools/eval.py runs next to the live models, as yardsticks.

- ``OnnxYardstick``: a non-blind CNN exported by tools/yardstick.py (inputs ``noisy`` [B, 3, H, W] in [0, 1]
  and ``sigma`` [B, 1, 1, 1] = std / 255), e.g. ``tools/yardsticks/ffdnet.onnx``.
- ``bm3d_restore``: BM3D (the ``bm3d`` package, a dev extra) told the noise level.

Both take uint8 RGB frames [T, H, W, 3] and a sigma on the 0-255 scale and return (restored uint8, seconds).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tools import degrade

FFDNET = Path(__file__).resolve().parent / "ffdnet.onnx"
SIGMA_GRID = (2.0, 5.0, 10.0, 15.0, 25.0)


def cpu_session(path: Path, threads: int) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (one inter-op)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxYardstick:
    """Frame-by-frame restoration with a non-blind ONNX denoiser (edges replicated to the pad multiple)."""

    def __init__(self, path: Path, threads: int) -> None:
        self.session = cpu_session(path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.multiple = int(meta.get("streamer.pad_multiple", "2"))

    def __call__(self, frames: np.ndarray, sigma: float) -> tuple[np.ndarray, float]:
        _count, height, width, _ = frames.shape
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        level = np.full((1, 1, 1, 1), sigma / 255.0, np.float32)
        outputs, seconds = [], 0.0
        for frame in frames:
            planar = frame.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
            planar = np.pad(planar, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="edge")
            started = time.perf_counter()
            restored = self.session.run(["restored"], {"noisy": planar, "sigma": level})[0]
            seconds += time.perf_counter() - started
            outputs.append(restored[0, :, :height, :width].transpose(1, 2, 0))
        return degrade.to_uint8(np.stack(outputs)), seconds


def bm3d_restore(frames: np.ndarray, sigma: float) -> tuple[np.ndarray, float]:
    """BM3D colour (``bm3d.bm3d_rgb``, YCbCr opponent transform inside) frame by frame, told ``sigma``."""
    import bm3d

    outputs, seconds = [], 0.0
    for frame in frames:
        started = time.perf_counter()
        restored = bm3d.bm3d_rgb(frame.astype(np.float64) / 255.0, sigma_psd=sigma / 255.0)
        seconds += time.perf_counter() - started
        outputs.append(np.asarray(restored))
    return degrade.to_uint8(np.stack(outputs)), seconds
