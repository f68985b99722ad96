"""Sections of tools/gpu_check.py beyond the PyTorch CUDA backend: TensorRT (where it imports) and 4K
frames restored in tiles. Each returns the section's dict; the check records and time-boxes it."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engines import create_engine, resolve_model
from engines.base import Engine
from engines.tiling import maybe_tiled
from engines.uint8_io import pack_uint8
from tools.gpu_scene import SceneFrames, psnr


def timed_calls(engine: Engine, windows_of: Callable[[int], list[list[np.ndarray]]], seconds: float) -> dict[str, Any]:
    """Calls of ``engine.infer_batch`` on fresh windows for ``seconds`` (after one untimed call)."""
    engine.infer_batch(windows_of(0))
    timings: list[float] = []
    deadline = time.perf_counter() + seconds
    step = 1
    while time.perf_counter() < deadline and len(timings) < 500:
        windows = windows_of(step)
        began = time.perf_counter()
        engine.infer_batch(windows)
        timings.append(time.perf_counter() - began)
        step += 1
    calls = np.array(timings) * 1000
    batch = len(windows_of(0))
    return {"calls": len(timings), "call_p50_ms": round(float(np.percentile(calls, 50)), 2),
            "call_p95_ms": round(float(np.percentile(calls, 95)), 2),
            "windows_per_s": round(float(batch * len(timings) / (calls.sum() / 1000)), 1)}


def _sliding(pool: list[np.ndarray], batch: int, window: int) -> Callable[[int], list[list[np.ndarray]]]:
    def windows_of(step: int) -> list[list[np.ndarray]]:
        return [[pool[(step + camera + k) % len(pool)][...] for k in range(window)] for camera in range(batch)]

    return windows_of


def tensorrt_section(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """TensorRT fp16 and INT8 (calibrated on the demo scene's noisy frames): build time, parity with ONNX
    Runtime CPU (float), throughput at 640x360 and 1280x720 in batches."""
    try:
        import tensorrt
    except Exception as error:
        return {"status_detail": f"TensorRT does not import here: {type(error).__name__}: {error}"[:300]}
    from engines.tensorrt_backend import TensorRTEngine

    rows: list[dict[str, Any]] = []
    scene = SceneFrames(640, 360, seed=7)
    pairs = [scene.pair(index) for index in range(24)]
    clean, noisy = [p[0] for p in pairs], [p[1] for p in pairs]
    calibration = [pack_uint8([noisy[start:start + 5]], 8).copy() for start in range(16)]
    for precision in ("fp16", "int8"):
        row: dict[str, Any] = {"precision": precision, "tensorrt": tensorrt.__version__}
        try:
            started = time.perf_counter()
            engine = TensorRTEngine(resolve_model("lite"), cache_dir=workdir / "engines", precision=precision,
                                    calibration=iter(calibration))
            engine.activate()
            row["build_s"] = round(time.perf_counter() - started, 1)
            with engine, create_engine("cpu", "lite", int8=False) as reference:
                windows = [noisy[start:start + 5] for start in range(4)]
                ours, theirs = engine.infer_batch(windows), [reference.infer(window) for window in windows]
                row["psnr_vs_ort_min_db"] = round(min(psnr(a, b) for a, b in zip(ours, theirs, strict=True)), 2)
                gains = [psnr(o, clean[s + 2]) - psnr(noisy[s + 2], clean[s + 2]) for s, o in enumerate(ours)]
                row["gain_db"] = round(float(np.mean(gains)), 2)
                for width, height, batches in ((640, 360, (1, 4, 8)), (1280, 720, (1, 4))):
                    rng = np.random.default_rng(width)
                    pool = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(8)]
                    for batch in batches:
                        cell = timed_calls(engine, _sliding(pool, batch, 5), args.cell_s)
                        row[f"{width}x{height}_b{batch}"] = cell
            row["status"] = "ok"
        except Exception as error:
            row["status"] = f"failed: {type(error).__name__}: {error}"[:400]
        rows.append(row)
    return {"model": "lite", "rows": rows,
            "timing": "one infer_batch call end to end (pack into pinned memory, upload, model, download, copy out)"}


def tiles_section(args: argparse.Namespace, engine_factory: Callable[[], Engine]) -> dict[str, Any]:
    """3840x2160 frames restored in 512-pixel tiles (overlap 32) on the GPU engine, against whole frames."""
    rng = np.random.default_rng(11)
    width, height = (640, 360) if args.quick else (3840, 2160)
    pool = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(6)]
    rows: list[dict[str, Any]] = []
    tile = 256 if args.quick else 512
    for label, tiled in ((f"tiles {tile}/32", True), ("whole frame", False)):
        inner = engine_factory()
        engine = maybe_tiled(inner, tile, 32, above_pixels=0) if tiled else inner
        with engine:
            cell = timed_calls(engine, _sliding(pool, 1, engine.info.window), 2 * args.cell_s)
        rows.append({"size": f"{width}x{height}", "mode": label, **cell, "fps": cell["windows_per_s"]})
    return {"model": "lite", "rows": rows}
