"""Engine throughput: frames restored per second and latency, per backend and frame size.

Times ``Engine.infer`` end to end (packing the window, inference, unpacking), as the live path calls it.

    python -m tools.bench_engine --engine cpu --sizes 640x360 1280x720 --frames 40
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from engines import Engine, create_engine
from engines.onnx_cpu import OnnxCpuEngine
from tools.arguments import frame_size


def time_engine(engine: Engine, frames: list[np.ndarray], runs: int) -> np.ndarray:
    """Milliseconds of each of ``runs`` calls of ``engine.infer(frames)`` (activated engine)."""
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        engine.infer(frames)
        timings.append(time.perf_counter() - started)
    return np.array(timings) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="cpu", choices=["cpu", "tensorrt", "auto", "passthrough"])
    parser.add_argument("--model", help="ONNX model (default: shipped lite)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    parser.add_argument("--float", dest="int8", action="store_false",
                        help="CPU: time the float model even where an int8 twin exists")
    parser.add_argument("--file-graph", action="store_true",
                        help="CPU: run an int8 model's graph as its file has it, without the engine's faster form of "
                        "it (engines.int8_graph): the baseline of that rewrite")
    parser.add_argument("--sizes", nargs="+", type=frame_size, default=[(640, 360), (1280, 720)], metavar="WxH")
    parser.add_argument("--frames", type=int, default=40, help="timed inferences per size (after 3 warm-up)")
    args = parser.parse_args(argv)
    engine = create_engine(args.engine, args.model, args.threads, int8=args.int8)
    if args.file_graph and isinstance(engine, OnnxCpuEngine):
        engine.optimize = False
    with engine:
        print(f"{engine.describe()}")
        for width, height in args.sizes:
            rng = np.random.default_rng(0)
            frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(engine.info.window)]
            time_engine(engine, frames, 3)  # warm-up
            milliseconds = time_engine(engine, frames, args.frames)
            print(f"{width}x{height}: {1000 / milliseconds.mean():.1f} fps, p50 {np.percentile(milliseconds, 50):.1f} ms, "
                  f"p95 {np.percentile(milliseconds, 95):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
