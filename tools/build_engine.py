"""Build (and cache) the TensorRT engine of an ONNX model ahead of time, then time it.

The live pipeline builds when a camera starts (one engine, with a profile per frame-size class and the
batch sizes the shared scheduler sends); building here first avoids that pause at start-up. The cache key
is the wrapped model's hash + profiles + precision (+ the INT8 calibration) + TensorRT version + GPU (see
``engines.cache``), so a cached engine is never used on a GPU or TensorRT version it was not built for.
INT8 calibrates on real clips degraded as cameras degrade them (``tools.calibration``, seed 1) and leaves
a calibration cache beside the engines, which ``engine.tensorrt_int8: true`` cameras then build from.
Needs the ``gpu`` extra.

    python -m tools.build_engine --size 1920x1080 [--model lite] [--precision fp16|fp32]
    python -m tools.build_engine --precision int8 --calibration ../shared/media/clips/*.mp4
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from engines import EngineError, resolve_model
from engines.tensorrt_backend import TensorRTEngine, tensorrt_available
from engines.tensorrt_build import PRECISIONS, calibration_cache_path
from engines.uint8_io import wrapped_model_bytes
from tools.arguments import frame_size
from tools.calibration import calibration_windows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lite", help="a shipped model's name or an ONNX file (default: lite)")
    parser.add_argument("--size", type=frame_size, default="1280x720", help="frame size WxH to time after the build")
    parser.add_argument("--batch", type=int, default=1, help="windows per timed call (cameras batched)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16")
    parser.add_argument("--calibration", type=Path, nargs="+", help="INT8: clips to calibrate on")
    parser.add_argument("--calibration-windows", type=int, default=8, help="INT8: windows per clip")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/streamer/engines").expanduser())
    parser.add_argument("--runs", type=int, default=50, help="timed calls after the build")
    args = parser.parse_args(argv)
    if not tensorrt_available():
        print("build_engine: TensorRT or a CUDA GPU is not available here")
        return 2
    model = resolve_model(args.model)
    width, height = args.size
    probe = TensorRTEngine(model, cache_dir=args.cache_dir, precision=args.precision)
    batches = None
    if args.precision == "int8":
        cache = calibration_cache_path(args.cache_dir, wrapped_model_bytes(model, probe.info.window))
        if cache.exists():
            print(f"INT8: using the calibration cache {cache} (delete it to calibrate again)")
        elif args.calibration:
            batches = calibration_windows(args.calibration, probe.info.window, probe.info.pad_multiple,
                                          args.calibration_windows)
    engine = TensorRTEngine(model, cache_dir=args.cache_dir, precision=args.precision, calibration=batches)
    rng = np.random.default_rng(0)
    windows = [[rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(engine.info.window)]
               for _ in range(args.batch)]
    try:
        started = time.perf_counter()
        with engine:  # activation builds (calibrating for INT8) or loads the cached engine
            print(f"engine ready in {time.perf_counter() - started:.1f} s: {engine.describe()} (cache: {args.cache_dir})")
            engine.infer_batch(windows)
            milliseconds = []
            for _ in range(args.runs):
                call = time.perf_counter()
                engine.infer_batch(windows)
                milliseconds.append(1000 * (time.perf_counter() - call))
    except EngineError as error:
        print(f"build_engine: {error}")
        return 1
    p50 = float(np.percentile(milliseconds, 50))
    print(f"{width}x{height} x{args.batch} {args.precision}: p50 {p50:.2f} ms, p95 {np.percentile(milliseconds, 95):.2f} ms "
          f"a call, {1000 * args.batch / p50:.1f} windows/s (host copies included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
