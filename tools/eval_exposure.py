"""Exposure correction on dark clips: the streamer's ``exposure`` stage after restoration, against FFmpeg's
blind auto-levels (``normalize``), on clips the model never saw (``../shared/media/val`` by default).

Each clip's first ``--frames`` frames (640x360) are under-exposed (``--darkening GAIN:GAMMA``, in the encoded
domain: ``(x / 255) ** gamma * gain``), get Poisson-Gaussian sensor noise and an x264 CRF 30 re-encode (the
low-light case of ``tools/eval.py``), and are then scored against the well-exposed clean frames:

- ``input``: the dark frames as the camera sends them;
- ``input+normalize``, ``input+exposure``: brightened without restoration (FFmpeg's ``normalize`` with a
  one-second smoothing, the streamer's exposure correction);
- ``MODEL``, ``MODEL+normalize``, ``MODEL+exposure``: restored by the model (int8, sliding windows), then
  left dark or brightened.

PSNR and SSIM against the clean frames, flicker (tools/eval.py's) and the mean brightness (0-255) of output
and clean. Usage::

    python -m tools.eval_exposure --model lite=engines/models/lite.int8.onnx --out results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from streamer.config import ExposureConfig
from streamer.exposure import ExposureCorrector
from streamer.graph.frames import Frame
from tools import degrade
from tools.arguments import frame_size
from tools.eval import MEDIA, OnnxRestorer, flicker, psnr, run_ffmpeg, ssim
from tools.eval_report import mean_over_clips
from tools.training_cache import list_clips

NORMALIZE = "normalize=smoothing=25:independence=0"  # FFmpeg's auto-levels, over one second at 25 fps


def darken_clip(clean: np.ndarray, gain: float, gamma: float, seed: int) -> np.ndarray:
    """Under-exposed, noisy and re-encoded: what a camera at night sends (tools/eval.py's low-light case)."""
    dark = degrade.darken(clean, gain, gamma)
    noisy = degrade.add_poisson_gaussian_noise(dark, 0.008, 5.0, np.random.default_rng(seed))
    return degrade.x264_roundtrip(noisy, 30, threads=1)


def corrected(frames: np.ndarray, config: ExposureConfig, fps: float = 25.0) -> np.ndarray:
    """``frames`` through a fresh ExposureCorrector at ``fps`` (the first frame sets the gain at once)."""
    corrector = ExposureCorrector(config)
    return np.stack([corrector.correct(Frame(image, index / fps, 0.0, index)).image
                     for index, image in enumerate(frames)])


def scores(output: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    return {"psnr": psnr(output, clean), "ssim": ssim(output, clean), "flicker": flicker(output, clean),
            "brightness": float(output.mean()), "clean_brightness": float(clean.mean())}


def evaluate_clip(clean: np.ndarray, dark: np.ndarray, models: dict[str, OnnxRestorer], config: ExposureConfig,
                  threads: int) -> dict[str, dict[str, float]]:
    bases = {"input": dark} | {name: model(dark)[0] for name, model in models.items()}
    results: dict[str, dict[str, float]] = {}
    for name, frames in bases.items():
        results[name] = scores(frames, clean)
        results[f"{name}+normalize"] = scores(run_ffmpeg(frames, NORMALIZE, threads)[0], clean)
        results[f"{name}+exposure"] = scores(corrected(frames, config), clean)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, nargs="+", help=f"video files or folders (default: {MEDIA / 'val'})")
    parser.add_argument("--model", action="append", default=[], help="NAME=PATH.onnx (repeatable)")
    parser.add_argument("--darkening", nargs="+", default=["0.3:1.3", "0.15:1.0", "0.5:1.8"],
                        help="GAIN:GAMMA under-exposures (the first is tools/eval.py's low-light case)")
    parser.add_argument("--frames", type=int, default=48, help="frames per clip")
    parser.add_argument("--size", type=frame_size, default="640x360", help="WxH the clips are resized to")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--exposure", default="{}", help="the exposure settings as JSON (default: the camera's "
                        "defaults, enabled), e.g. '{\"max_gain\": 8}'")
    parser.add_argument("--out", type=Path, required=True, help="JSON results (per clip and mean)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    width, height = args.size
    models = {spec.split("=", 1)[0]: OnnxRestorer(Path(spec.split("=", 1)[1]), args.threads) for spec in args.model}
    clips = list_clips(args.clips or [MEDIA / "val"])
    config = ExposureConfig.model_validate({**json.loads(args.exposure), "enabled": True})
    report: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for darkening in args.darkening:
        gain, gamma = (float(value) for value in darkening.split(":"))
        per_clip: dict[str, dict[str, dict[str, float]]] = {}
        for index, clip in enumerate(clips):
            clean = degrade.read_clip(clip, 0, args.frames, (width, height))
            dark = darken_clip(clean, gain, gamma, seed=index)
            per_clip[clip.stem] = evaluate_clip(clean, dark, models, config, args.threads)
            print(darkening, clip.stem, {name: round(row["psnr"], 2) for name, row in per_clip[clip.stem].items()},
                  flush=True)
        mean = mean_over_clips(per_clip)
        report[darkening] = {"mean": mean, **per_clip}
        print(f"\n{darkening} mean over {len(per_clip)} clips: PSNR / SSIM / flicker / brightness (clean)")
        for method, row in mean.items():
            print(f"  {method:20s} {row['psnr']:6.2f} dB  {row['ssim']:.3f}  {row['flicker']:5.2f}  "
                  f"{row['brightness']:5.1f} ({row['clean_brightness']:.1f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
