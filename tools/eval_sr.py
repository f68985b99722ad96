"""x2 super-resolution on clips the model never saw (``../shared/media/val`` by default), against the scalers a
player or FFmpeg would use and against restoring at the low resolution then scaling.

Each clip's first ``--frames`` frames at ``--size`` (640x360) are the ground truth; the low-resolution input is
them scaled down 2x by swscale's bicubic (what a camera's or FFmpeg's scaler makes of a substream), then:

- ``clean``: as it is;
- ``crf28``: x264 CRF 28 at the low resolution (a substream's coding, BT.601 tv range, no B-frames);
- ``noise_crf28``: Gaussian noise sigma 8, then CRF 28 (a dim scene's substream).

Methods: ``bicubic`` and ``lanczos`` (swscale, FFmpeg's ``scale`` filter), and each ``--model`` (int8 or float
ONNX, sliding windows, edge frames replicated): a model whose ``streamer.scale`` is 2 upscales itself; any other
restores at the low resolution and is then scaled bicubic (``NAME+bicubic``: what the ladder's ``fast`` level
gives). PSNR and SSIM (BT.601 luma) against the ground truth, flicker (tools/eval.py's), and the model's
milliseconds per low-resolution frame. Usage::

    python -m tools.eval_sr --model lite-sr2=engines/models/lite-sr2.int8.onnx \\
        --model lite=engines/models/lite.int8.onnx --out results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from streamer.ladder import scale
from tools import degrade
from tools.arguments import frame_size
from tools.eval import MEDIA, OnnxRestorer, flicker, psnr, ssim
from tools.eval_report import mean_over_clips
from tools.training_cache import list_clips

CASES = ("clean", "crf28", "noise_crf28")
SCALERS = {"bicubic": "BICUBIC", "lanczos": "LANCZOS"}


def resize(frames: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """RGB frames [T, H, W, 3] scaled to ``size`` = (W, H) by swscale."""
    return np.stack([scale(frame, size, interpolation) for frame in frames])


def low_resolution(clean: np.ndarray, case: str, seed: int) -> np.ndarray:
    """The 2x smaller input for ``case`` (see the module's docstring)."""
    height, width = clean.shape[1:3]
    small = resize(clean, (width // 2, height // 2), "BICUBIC")
    if case == "clean":
        return small
    if case == "noise_crf28":
        small = degrade.add_gaussian_noise(small, 8.0, np.random.default_rng(seed))
    return degrade.x264_roundtrip(small, 28, bframes=0, threads=1)


def scores(output: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    return {"psnr": psnr(output, clean), "ssim": ssim(output, clean), "flicker": flicker(output, clean)}


def evaluate_clip(clean: np.ndarray, small: np.ndarray, models: dict[str, OnnxRestorer]) -> dict[str, dict[str, float]]:
    size = (clean.shape[2], clean.shape[1])
    results = {name: scores(resize(small, size, interpolation), clean) for name, interpolation in SCALERS.items()}
    for name, model in models.items():
        output, seconds = model(small)
        if model.scale == 1:
            output, name = resize(output, size, "BICUBIC"), f"{name}+bicubic"
        results[name] = {**scores(output, clean), "ms": 1000 * seconds / len(small)}
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, nargs="+", help=f"video files or folders (default: {MEDIA / 'val'})")
    parser.add_argument("--model", action="append", default=[], help="NAME=PATH.onnx (repeatable)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--frames", type=int, default=24, help="frames per clip")
    parser.add_argument("--size", type=frame_size, default="640x360", help="WxH of the ground truth (the input is half of it)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="JSON results (per case: per clip and mean)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    width, height = args.size
    if width % 4 or height % 4:
        raise SystemExit(f"--size {width}x{height}: width and height must be multiples of 4 (the input is half, even)")
    models = {spec.split("=", 1)[0]: OnnxRestorer(Path(spec.split("=", 1)[1]), args.threads) for spec in args.model}
    clips = list_clips(args.clips or [MEDIA / "val"])
    cleans = {clip.stem: degrade.read_clip(clip, 0, args.frames, (width, height)) for clip in clips}
    report: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for case in args.cases:
        per_clip: dict[str, dict[str, dict[str, float]]] = {}
        for index, (name, clean) in enumerate(cleans.items()):
            per_clip[name] = evaluate_clip(clean, low_resolution(clean, case, seed=index), models)
            print(case, name, {method: round(row["psnr"], 2) for method, row in per_clip[name].items()}, flush=True)
        mean = mean_over_clips(per_clip)
        report[case] = {"mean": mean, **per_clip}
        print(f"\n{case}: mean over {len(per_clip)} clips, {width}x{height} from {width // 2}x{height // 2}: "
              "PSNR / SSIM / flicker (ms a frame)")
        for method, row in mean.items():
            timing = f"  {row['ms']:5.1f} ms" if "ms" in row else ""
            print(f"  {method:22s} {row['psnr']:6.2f} dB  {row['ssim']:.4f}  {row['flicker']:5.2f}{timing}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
