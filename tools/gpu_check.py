"""One GPU check, ready to run the day a GPU is lent: environment, backends, parity, throughput, live run.

    python -m tools.gpu_check --out $OUT/gpu_check          # on the GPU machine (~4-5 minutes, <= 8)
    python -m tools.gpu_check --device cpu --quick           # the same flow on the CPU, tiny sizes (~1-2 min)

Sections (each recorded even when it fails; those that would start after ``--deadline-s`` are skipped):
environment (GPU, driver, CUDA, which backends import), backends (TensorRT when it imports; the PyTorch
CUDA backend built from the float ONNX), parity with ONNX Runtime CPU (float) on camera-like frames for every
shipped model (PSNR between outputs, goal >= 45 dB in fp16, and each one's PSNR gain over the noisy input),
throughput per frame size and batch (windows of B cameras restored in one call, each camera bringing one new
frame per call as a live sliding window does; uint8 in and out through pinned host memory, timed with a
synchronised wall clock, plus the device part alone with CUDA events), 4K in 512-pixel tiles beside whole
frames, fp16 vs fp32 and CUDA graphs on vs off, TensorRT fp16 and INT8 where TensorRT imports
(``tools.gpu_sections``), and a live run of N cameras through the whole pipeline (``tools.gpu_live``; the
largest count for 60 s). The report is written as
``PREFIX.json`` and ``PREFIX.md`` after every section and printed at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engines import create_engine, resolve_model, shipped_models
from engines.base import Engine, EngineError
from engines.torch_backend import TorchEngine
from tools.arguments import frame_size
from tools.gpu_environment import environment
from tools.gpu_report import Report, Section
from tools.gpu_scene import SceneFrames, psnr
from tools.gpu_sections import tensorrt_section, tiles_section

PARITY_GOAL_DB = 45.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check_report"), help="report prefix (.json, .md)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (rehearsal)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and durations (CPU rehearsal, tests)")
    parser.add_argument("--deadline-s", type=float, help="global time budget (default 400, quick 240)")
    parser.add_argument("--models", nargs="+", help="models for parity (default: every shipped one)")
    parser.add_argument("--sizes", nargs="+", type=frame_size, help="throughput frame sizes WxH")
    parser.add_argument("--batches", nargs="+", type=int, help="throughput batch sizes (cameras per call)")
    parser.add_argument("--cell-s", type=float, help="time box of one throughput cell")
    parser.add_argument("--live-cameras", nargs="+", type=int, help="camera counts of the live run")
    parser.add_argument("--live-seconds", type=float, help="measured seconds per camera count")
    parser.add_argument("--live-long-s", type=float, help="measured seconds of the largest camera count (the long run)")
    parser.add_argument("--live-size", type=frame_size, help="live camera size WxH")
    parser.add_argument("--skip", nargs="*", default=[], help="sections to leave out (e.g. live throughput)")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults: dict[str, Any] = {
        "deadline_s": 240.0 if quick else 400.0,
        "models": gpu_models(),
        "sizes": [(160, 96)] if quick else [(640, 360), (1280, 720), (1920, 1080), (3840, 2160)],
        "batches": [1, 2] if quick else [1, 2, 4, 8, 16],
        "cell_s": 0.4 if quick else 1.5,
        "live_cameras": [1, 2] if quick else [1, 4, 16],
        "live_seconds": 4.0 if quick else 15.0,
        "live_long_s": 4.0 if quick else 60.0,
        "live_size": (320, 176) if quick else (1280, 720),
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.parity_size = (161, 93) if quick else (1280, 720)  # quick: odd on purpose (padding and crop)
    args.parity_windows = 2 if quick else 4
    args.variant_size = (128, 72) if quick else (1280, 720)
    args.variant_batches = [1] if quick else [1, 8]
    args.live_warmup_s = 1.5 if quick else 3.0
    args.clip_seconds = 2.0 if quick else 6.0
    return args


def gpu_models() -> list[str]:
    """The shipped models the PyTorch backend runs: all of them (TensorRT refuses recurrent ones)."""
    return list(shipped_models())


# -- backends ----------------------------------------------------------------------------------------------
def _torch_engine(args: argparse.Namespace, model: str, fp16: bool = True, graphs: bool = True, shapes: int = 8) -> TorchEngine:
    return TorchEngine(resolve_model(model), device=args.device, fp16=fp16, cuda_graphs=graphs, max_shapes=shapes)


def backends(args: argparse.Namespace) -> Section:
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in range(5)]
    try:
        import tensorrt  # noqa: F401

        trt_ok = True
    except Exception as error:  # ImportError, or a stub package that raises on import
        rows.append({"backend": "tensorrt", "status": "not installed", "detail": str(error)})
        trt_ok = False
    candidates: list[tuple[str, Callable[[], Engine]]] = []
    if trt_ok:
        candidates.append(("tensorrt", lambda: create_engine("tensorrt", "lite", fp16=True)))
    if args.device.startswith("cuda"):
        candidates.append(("cuda (create_engine)", lambda: create_engine("cuda", "lite", fp16=True)))
    else:
        candidates.append(("torch-cpu", lambda: _torch_engine(args, "lite")))
    for name, factory in candidates:
        row: dict[str, Any] = {"backend": name}
        try:
            started = time.perf_counter()
            engine = factory()
            engine.activate()
            row["activate_s"] = round(time.perf_counter() - started, 3)
            for label in ("first_infer_ms", "second_infer_ms"):  # the first captures the CUDA graph for 640x360
                started = time.perf_counter()
                engine.infer(frames)
                row[label] = round(1000 * (time.perf_counter() - started), 2)
            row["status"] = "ok"
            row["describe"] = engine.describe()
            engine.deactivate()
        except Exception as error:
            row["status"] = f"failed: {type(error).__name__}: {error}"[:300]
        rows.append(row)
    section: Section = {"backends": rows}
    try:
        from streamer.config import EngineConfig

        section["config_engine_type_cuda"] = EngineConfig(type="cuda").type
    except Exception as error:
        section["config_engine_type_cuda"] = f"{type(error).__name__}: {error}"
    return section


# -- parity ------------------------------------------------------------------------------------------------
def mean_gain(outputs: list[np.ndarray], targets: list[np.ndarray], base: list[float]) -> float:
    """Mean PSNR of ``outputs`` against ``targets`` over the inputs' (``base``), dB."""
    return round(float(np.mean([psnr(o, t) for o, t in zip(outputs, targets, strict=True)]) - np.mean(base)), 2)


def parity(args: argparse.Namespace) -> Section:
    width, height = args.parity_size
    scene = SceneFrames(width, height)
    count = args.parity_windows + 4
    pairs = [scene.pair(index) for index in range(count)]
    clean, noisy = [p[0] for p in pairs], [p[1] for p in pairs]
    odd = [np.ascontiguousarray(frame[: height - 3, : width - 1]) for frame in noisy]  # not a multiple of 4
    rows: list[dict[str, Any]] = []
    variants = [(model, True) for model in args.models]
    if args.device.startswith("cuda"):
        variants.append((args.models[0], False))  # fp32 on the GPU too (on the CPU every row is fp32)
    for model, fp16 in variants:
        cpu = create_engine("cpu", model, int8=False)
        gpu = _torch_engine(args, model, fp16=fp16)
        with cpu, gpu:
            reference_index = cpu.info.reference_index
            windows = [noisy[start : start + 5] for start in range(args.parity_windows)]
            # each window as its own camera (a recurrent model starts from the reference frame in all three)
            ours = gpu.infer_batch(windows, [f"batch{index}" for index in range(len(windows))])
            single = [gpu.infer_batch([window], [f"single{index}"])[0] for index, window in enumerate(windows)]
            theirs = [cpu.infer_batch([window], [f"single{index}"])[0] for index, window in enumerate(windows)]
            odd_ours, odd_theirs = gpu.infer(odd[:5]), cpu.infer(odd[:5])
            # a recurrent model: one camera sliding by a frame per call, its state carried on both engines
            recurrent = gpu.info.recurrent
            carried = [psnr(gpu.infer_batch([w], ["run"])[0], cpu.infer_batch([w], ["run"])[0])
                       for w in windows] if recurrent else []
        between = [psnr(a, b) for a, b in zip(ours, theirs, strict=True)]
        targets = [clean[start + reference_index] for start in range(args.parity_windows)]
        inputs = [window[reference_index] for window in windows]
        base = [psnr(image, target) for image, target in zip(inputs, targets, strict=True)]
        upscales = cpu.info.scale > 1  # its output is larger than the scene's frames: parity only, no gain

        rows.append({
            "model": model,
            "precision": "fp16" if gpu.fp16 else "fp32",
            "size": f"{width}x{height}",
            "psnr_vs_ort_min_db": round(min(between), 2),
            "psnr_vs_ort_odd_size_db": round(psnr(odd_ours, odd_theirs), 2),
            "max_abs_diff": int(max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(ours, theirs, strict=True))),
            "batch_vs_single_max_diff": int(max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(ours, single, strict=True))),
            "gain_ort_db": None if upscales else mean_gain(theirs, targets, base),
            "gain_ours_db": None if upscales else mean_gain(ours, targets, base),
            "psnr_vs_ort_state_carried_db": round(min(carried), 2) if recurrent else None,
            "goal_45db": "pass" if min(*between, *carried, psnr(odd_ours, odd_theirs)) >= PARITY_GOAL_DB else "FAIL",
        })
    return {"frames": scene.kind, "noise": "Poisson-Gaussian sigma 18", "reference": "ONNX Runtime CPU, float model",
            "rows": rows}


# -- throughput --------------------------------------------------------------------------------------------
def bench_cell(engine: TorchEngine, pool: list[np.ndarray], batch: int, cell_s: float) -> dict[str, Any]:
    """B cameras, each bringing one new frame per call (a new array object: the engine must upload it)."""
    height, width = pool[0].shape[:2]
    started = time.perf_counter()
    engine.warm(batch, height, width)
    warm_s = time.perf_counter() - started
    window = engine.info.window
    cameras = [deque([pool[(c + k) % len(pool)][...] for k in range(window)], maxlen=window) for c in range(batch)]
    engine.infer_batch([list(camera) for camera in cameras])  # the first call uploads every frame
    timings: list[float] = []
    uploads_before = engine.uploads
    step = 0
    deadline = time.perf_counter() + cell_s
    while time.perf_counter() < deadline and len(timings) < 500:
        for camera in cameras:
            step += 1
            camera.append(pool[step % len(pool)][...])
        windows = [list(camera) for camera in cameras]
        began = time.perf_counter()
        engine.infer_batch(windows)
        timings.append(time.perf_counter() - began)
    calls = np.array(timings) * 1000
    uploads = (engine.uploads - uploads_before) / max(len(timings), 1)
    repeats = int(min(max(cell_s / max(float(np.median(calls)) / 1000, 1e-4), 1), 10))  # within the time box
    compute_ms = engine.time_compute(batch, height, width, repeats=repeats)
    return {
        "warm_s": round(warm_s, 2),
        "calls": len(timings),
        "windows_per_s": round(float(batch * len(timings) / (calls.sum() / 1000)), 1),
        "ms_per_window": round(float(calls.mean()) / batch, 3),
        "call_p50_ms": round(float(np.percentile(calls, 50)), 2),
        "call_p95_ms": round(float(np.percentile(calls, 95)), 2),
        "uploads_per_call": round(uploads, 2),
        "device_ms_per_call": round(compute_ms, 3),
        "device_windows_per_s": round(batch * 1000 / compute_ms, 1),
    }


class CellBudget:
    """Whether the next throughput cell fits the time left: its cost is estimated from the last cell's calls
    (seconds per window-pixel), since one call cannot be interrupted (4K x 16 on a CPU takes minutes)."""

    def __init__(self, report: Report, reserve_s: float, cell_s: float) -> None:
        self.report, self.reserve_s, self.cell_s = report, reserve_s, cell_s
        self.seconds_per_pixel = 0.0

    def fits(self, batch: int, width: int, height: int) -> bool:
        calls = 3 + (2 if self.seconds_per_pixel else 0)  # first call, timed ones, device timing
        estimate = self.cell_s + calls * self.seconds_per_pixel * batch * width * height
        return self.report.remaining() - self.reserve_s > estimate + 2

    def record(self, cell: dict[str, Any], batch: int, width: int, height: int) -> None:
        self.seconds_per_pixel = cell["call_p50_ms"] / 1000 / (batch * width * height)


def _peak_gib() -> float | None:
    try:
        import torch

        if torch.cuda.is_available():
            peak = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
            return round(peak, 2)
    except Exception:
        return None
    return None


def throughput(args: argparse.Namespace, report: Report, reserve_s: float) -> Section:
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    rng = np.random.default_rng(2)
    budget = CellBudget(report, reserve_s, args.cell_s)
    for width, height in args.sizes:
        pool = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(6)]
        engine = _torch_engine(args, "lite", shapes=1)  # one shape at a time: each batch frees the last one's memory
        with engine:
            for batch in args.batches:
                if not budget.fits(batch, width, height):
                    notes.append(f"{width}x{height} batch {batch}+: skipped (time budget)")
                    break
                try:
                    cell = bench_cell(engine, pool, batch, args.cell_s)
                except (EngineError, RuntimeError) as error:
                    notes.append(f"{width}x{height} batch {batch}: stopped the row: {error}"[:300])
                    break
                budget.record(cell, batch, width, height)
                rows.append({"size": f"{width}x{height}", "batch": batch, **cell, "peak_gib": _peak_gib()})
                print(f"[gpu_check] throughput {rows[-1]}", flush=True)
                report.progress("throughput", {"rows": rows, "notes": notes})
                if cell["warm_s"] > 5 * args.cell_s + 10 or cell["call_p50_ms"] > 1000 * args.cell_s:
                    notes.append(f"{width}x{height}: larger batches skipped (batch {batch} is too slow for the time box)")
                    break
    section: Section = {
        "model": "lite",
        "timing": "windows_per_s, ms_per_window, call_*: one infer_batch call end to end (new frames copied into "
        "pinned memory, uploaded, converted, model, quantised, downloaded, copied out); device_*: the device part "
        "alone (CUDA events); batch = cameras restored in one call, each bringing one new frame",
        "rows": rows,
        "cameras_at_25fps": "windows_per_s / 25 = cameras one GPU restores in real time (derived, not measured live)",
    }
    if notes:
        section["notes"] = notes
    return section


def variants(args: argparse.Namespace, report: Report, reserve_s: float) -> Section:
    width, height = args.variant_size
    rng = np.random.default_rng(3)
    pool = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(6)]
    rows: list[dict[str, Any]] = []
    seen: set[tuple[bool, bool, int]] = set()
    budget = CellBudget(report, reserve_s, args.cell_s)
    for fp16 in (True, False):
        for graphs in (True, False):
            engine = _torch_engine(args, "lite", fp16=fp16, graphs=graphs, shapes=1)
            with engine:
                for batch in args.variant_batches:
                    key = (engine.fp16, engine.cuda_graphs, batch)
                    if key in seen or not budget.fits(batch, width, height):
                        continue
                    seen.add(key)
                    cell = bench_cell(engine, pool, batch, args.cell_s)
                    budget.record(cell, batch, width, height)
                    rows.append({"precision": "fp16" if engine.fp16 else "fp32", "cuda_graphs": engine.cuda_graphs,
                                 "size": f"{width}x{height}", "batch": batch, **cell})
    return {"model": "lite", "rows": rows, "note": "fp32 convolutions use TF32 where cuDNN allows it (see environment)"}


# -- main --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    import logging

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = {key: value for key, value in vars(args).items() if key not in ("out",)}
    report = Report(args.out, args.deadline_s, settings)
    live_reserve = 0.0 if "live" in args.skip else (
        (len(args.live_cameras) - 1) * args.live_seconds + args.live_long_s
        + len(args.live_cameras) * (args.live_warmup_s + 8) + 15)
    report.run("environment", environment)
    if "backends" not in args.skip:
        report.run("backends", lambda: backends(args), needs_s=10)
    if "parity" not in args.skip:
        report.run("parity", lambda: parity(args), needs_s=15)
    if "throughput" not in args.skip:
        report.run("throughput", lambda: throughput(args, report, live_reserve + 20), needs_s=live_reserve + 10)
    if "tiles" not in args.skip:
        report.run("tiles", lambda: tiles_section(args, lambda: _torch_engine(args, "lite", shapes=1)),
                   needs_s=live_reserve + 20)
    if "variants" not in args.skip:
        report.run("variants", lambda: variants(args, report, live_reserve), needs_s=live_reserve + 5)
    if "tensorrt" not in args.skip:
        with tempfile.TemporaryDirectory(prefix="gpu-check-trt-") as trt_dir:
            report.run("tensorrt", lambda: tensorrt_section(args, Path(trt_dir)), needs_s=live_reserve + 60)
    if "live" not in args.skip:
        from tools.gpu_live import live_section

        width, height = args.live_size

        def factory() -> Engine:
            engine = _torch_engine(args, "lite")
            engine.activate(shapes=[(1, height, width)])
            return engine

        engine_type = "cuda" if args.device.startswith("cuda") else "cpu"
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as workdir:
            report.run("live", lambda: live_section(
                Path(workdir), args.live_size, args.live_cameras, args.live_seconds, args.live_warmup_s,
                args.clip_seconds, factory, engine_type, report.remaining, lambda part: report.progress("live", part),
                args.live_long_s),
                needs_s=args.live_seconds + 10)
    report.write()
    print(report.markdown_path.read_text(), flush=True)
    print(f"[gpu_check] report: {report.json_path} {report.markdown_path}", flush=True)
    failed = [name for name, section in report.data["sections"].items() if section["status"] == "error"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
