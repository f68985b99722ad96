"""Build (and cache) the TensorRT engine of an ONNX model ahead of time, then time it at one frame size.

The live pipeline builds when a camera starts (one engine covers every size up to 4K); building here first
avoids that pause at start-up. The cache key is the ONNX hash + shape profile + precision + TensorRT
version + GPU (see ``engines.cache``), so a cached engine is never used on a GPU or TensorRT version it was
not built for. Needs the ``gpu`` extra.

    python -m tools.build_engine --size 1920x1080 [--model engines/models/lite.onnx] [--fp32]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from engines import DEFAULT_MODEL, EngineError
from engines.tensorrt_backend import TensorRTEngine, tensorrt_available
from tools.bench_engine import time_engine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX model (default: shipped lite)")
    parser.add_argument("--size", default="1920x1080", help="frame size WxH to time (and tune the engine for)")
    parser.add_argument("--fp32", action="store_true", help="build in fp32 instead of fp16")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/streamer/engines").expanduser())
    parser.add_argument("--runs", type=int, default=50, help="timed inferences after the build")
    args = parser.parse_args(argv)
    if not tensorrt_available():
        print("build_engine: TensorRT or a CUDA GPU is not available here")
        return 2
    width, height = (int(part) for part in args.size.lower().split("x"))
    engine = TensorRTEngine(args.model, fp16=not args.fp32, cache_dir=args.cache_dir, opt_size=(height, width))
    frames = [np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)
              for index in range(engine.info.window)]
    try:
        started = time.perf_counter()
        with engine:  # activation builds or loads the cached engine
            print(f"engine ready in {time.perf_counter() - started:.1f} s (cache: {args.cache_dir})")
            milliseconds = time_engine(engine, frames, args.runs)
    except EngineError as error:
        print(f"build_engine: {error}")
        return 1
    print(f"{args.size} {'fp32' if args.fp32 else 'fp16'}: p50 {np.percentile(milliseconds, 50):.2f} ms, "
          f"p95 {np.percentile(milliseconds, 95):.2f} ms, {1000 / np.mean(milliseconds):.1f} fps (incl. host copies)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
