"""Long-run quality through the engine: each clip streamed frame by frame as one camera, per-frame PSNR by span.

``tools/eval.py`` scores the first 24 frames of each clip; a recurrent model carries a state from frame to frame,
so what it does after a hundred frames (a gain that grows, or errors that pile up) needs longer runs. Here each
clip's first ``--frames`` frames are degraded (the same degradations as ``tools/eval.py``), slid through the CPU
engine's ``infer_batch`` as one stream (the engine keeps a recurrent model's state exactly as it does live), and
each model's PSNR is reported over spans of output frames (``--spans``). The last restored frame of each run is
saved as a PNG grid (clean, degraded, then each model) to look for ghosting. Example:

    python -m tools.eval_stream --model lite --model lite-recurrent --frames 250 --out-dir /scratch/stream
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from engines import create_engine
from tools import degrade
from tools.arguments import frame_size
from tools.eval import DEGRADATIONS, MEDIA, degradation_seed, degrade_clip, psnr
from tools.training_cache import list_clips
from tools.watch_demo import write_png


def stream_scores(
    model: str, frames: list[np.ndarray], clean: np.ndarray, threads: int, int8: bool
) -> tuple[list[float], np.ndarray, int]:
    """Per-frame PSNR of ``model`` restoring every frame of ``frames`` that has a whole window (the edge frames
    are left out), as one stream; the last restored frame and its index."""
    with create_engine("cpu", model, threads=threads, int8=int8) as engine:
        window, reference = engine.info.window, engine.info.reference_index
        scores: list[float] = []
        restored, index = clean[0], 0
        for start in range(len(frames) - window + 1):
            # the same frame objects from window to window: the engine follows a stream by frame identity
            restored, index = engine.infer_batch([frames[start : start + window]], ["stream"])[0], start + reference
            scores.append(psnr(restored, clean[index]))
    return scores, restored, index


def span_means(scores: list[float], spans: list[int]) -> dict[str, float]:
    """Mean PSNR over [0, s1), [s1, s2), ..., [sN, end) of the output frames (empty spans left out)."""
    bounds = [0, *spans, len(scores)]
    means: dict[str, float] = {}
    for low, high in itertools.pairwise(bounds):
        high = min(high, len(scores))
        if high > low:
            means[f"{low}-{high}"] = float(np.mean(scores[low:high]))
    return means


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="shipped model name or ONNX file (repeatable)")
    parser.add_argument("--clips", type=Path, nargs="+", help=f"video files or folders (default: {MEDIA / 'val'})")
    parser.add_argument("--frames", type=int, default=250, help="frames per clip (fewer when the clip is shorter)")
    parser.add_argument("--spans", type=int, nargs="*", default=[24, 100], help="output-frame boundaries of the spans")
    parser.add_argument("--degradations", nargs="+", default=["sigma25", "crf37"], choices=list(DEGRADATIONS))
    parser.add_argument("--size", type=frame_size, default="640x360", help="WxH the clips are resized to")
    parser.add_argument("--float", action="store_true", help="run the float models (default: their int8 twins)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, required=True, help="results.json and PNG grids")
    args = parser.parse_args(argv)
    if args.frames < 8:
        parser.error("--frames must be at least 8")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    width, height = args.size
    clips = list_clips(args.clips or [MEDIA / "val"])
    if not clips:
        raise SystemExit("no clips found")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for clip in clips:
        count = min(degrade.count_frames(clip), args.frames)
        clean_all = degrade.read_clip(clip, 0, count, (width, height))
        for name in args.degradations:
            clean, degraded = degrade_clip(name, clean_all, degradation_seed(name, args.degradations, args.seed))
            frames = [degraded[index] for index in range(len(degraded))]
            key = f"{clip.stem}/{name}"
            results[key] = {}
            tiles: list[np.ndarray] = []
            for model in args.model:
                scores, last, index = stream_scores(model, frames, clean, args.threads, not args.float)
                results[key][model] = {**span_means(scores, args.spans), "all": float(np.mean(scores))}
                tiles += [] if tiles else [clean[index], degraded[index]]  # the first model's last frame
                tiles.append(last)
            print(key, json.dumps(results[key]), flush=True)
            columns = 2
            while len(tiles) % columns:
                tiles.append(np.zeros_like(tiles[0]))
            rows = [np.concatenate(tiles[index : index + columns], axis=1) for index in range(0, len(tiles), columns)]
            write_png(args.out_dir / f"{clip.stem}_{name}.png", np.concatenate(rows, axis=0))
    (args.out_dir / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
