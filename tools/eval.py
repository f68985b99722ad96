"""Evaluate restoration models against FFmpeg denoisers and yardsticks on degraded versions of real clips.

By default the clips are ../shared/media/val (scenes never trained on) and each contributes its FIRST
``--frames`` frames; ``--held-out`` instead takes the tail after ``--train-fraction`` of training clips (the
part tools/train.py does not train on; same scenes and cameras, so optimistic). Frames are resized to
640x360. Degradations: Gaussian sigma 15 and 25, H.264 CRF 37 re-encode, low light (darkened,
Poisson-Gaussian noise, CRF 30) and noise_crf30 (Gaussian sigma 10, then CRF 30); x264 runs in BT.601 limited
("tv") range like cameras. Reported per clip and mean: RGB PSNR, SSIM (luma), temporal flicker (RMS of the
difference between restored and clean frame-to-frame changes, 0-255 scale; lower is better) and fps. FFmpeg
filters are tuned by a small grid search on the same frames (an optimistic, oracle tuning for them).

Yardsticks (rows in every table): ``bm3d`` (told the true sigma, on the sigma rows only, first
``--bm3d-frames`` frames) and ``--yardstick NAME=PATH.onnx`` non-blind CNNs (default: tools/yardsticks/
ffdnet.onnx when present) told the true sigma on the sigma rows and an oracle sigma from SIGMA_GRID on the
others (shown in the setting column). Example:

    python -m tools.eval --model lite=engines/models/lite.int8.onnx --out-dir /scratch/eval
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tools import degrade
from tools.arguments import frame_size
from tools.eval_report import MethodResult, markdown_table, write_results
from tools.training_cache import list_clips
from tools.yardsticks import FFDNET, SIGMA_GRID, OnnxYardstick, bm3d_restore, cpu_session

MEDIA = Path(__file__).resolve().parents[1].parent / "shared/media"

FFMPEG_GRIDS: dict[str, list[str]] = {
    "hqdn3d": [f"hqdn3d={s}:{s}:{t}:{t}" for s, t in [(4, 6), (10, 15), (20, 30), (30, 40), (45, 60)]],
    "atadenoise": [
        f"atadenoise=0a={a}:1a={a}:2a={a}:0b={b}:1b={b}:2b={b}"
        for a, b in [(0.02, 0.04), (0.1, 0.2), (0.2, 0.4), (0.3, 1.0)]
    ],
    "vaguedenoiser": [f"vaguedenoiser=threshold={t}" for t in (2, 6, 12, 25, 40)],
    "fftdnoiz": [f"fftdnoiz=sigma={s}" for s in (3, 8, 16, 30)],
    "nlmeans": [f"nlmeans=s={s}" for s in (4, 8, 14, 22)],
    "deblock": [
        "deblock=filter=weak:block=8",
        "deblock=filter=strong:block=8",
        "deblock=filter=weak:block=4",
        "deblock=filter=strong:block=16",
    ],
}
SLOW_FILTERS = ("nlmeans",)


def psnr(restored: np.ndarray, clean: np.ndarray) -> float:
    """Mean over frames of RGB PSNR (uint8 frames [T, H, W, 3] or a single frame)."""
    difference = restored.astype(np.int32).reshape(-1, *clean.shape[-3:]) - clean.reshape(
        -1, *clean.shape[-3:]
    )
    mse = np.maximum(np.mean(np.square(difference), axis=(1, 2, 3), dtype=np.float64), 1e-10)
    return float(np.mean(10 * np.log10(255.0**2 / mse)))


def _gaussian_blur(image: np.ndarray, sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1, dtype=np.float32) / sigma) ** 2)
    taps /= taps.sum()
    rows = np.lib.stride_tricks.sliding_window_view(image, 2 * radius + 1, axis=0) @ taps
    return np.lib.stride_tricks.sliding_window_view(rows, 2 * radius + 1, axis=1) @ taps


def ssim(restored: np.ndarray, clean: np.ndarray) -> float:
    """Mean over frames of SSIM on BT.601 luma (Gaussian window 11, sigma 1.5, valid region)."""
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    first = restored.reshape(-1, *clean.shape[-3:]).astype(np.float32) @ weights
    second = clean.reshape(-1, *clean.shape[-3:]).astype(np.float32) @ weights
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    scores = []
    for x, y in zip(first, second, strict=True):
        mu_x, mu_y = _gaussian_blur(x), _gaussian_blur(y)
        var_x = _gaussian_blur(x * x) - mu_x**2
        var_y = _gaussian_blur(y * y) - mu_y**2
        cov = _gaussian_blur(x * y) - mu_x * mu_y
        ratio = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        scores.append(float(np.mean(ratio, dtype=np.float64)))
    return float(np.mean(scores))


def flicker(restored: np.ndarray, clean: np.ndarray) -> float:
    """RMS (0-255) of (restored[t] - restored[t-1]) - (clean[t] - clean[t-1]), averaged over t."""
    restored_i, clean_i = restored.astype(np.int32), clean.astype(np.int32)
    difference = np.diff(restored_i, axis=0) - np.diff(clean_i, axis=0)
    return float(np.mean(np.sqrt(np.mean(np.square(difference), axis=(1, 2, 3), dtype=np.float64))))


DEGRADATIONS = ("sigma15", "sigma25", "crf37", "lowlight", "noise_crf30")


def degradation_seed(name: str, requested: list[str], base_seed: int) -> int:
    """Seed of a degradation's noise: fixed by its place in the default list, so a run of a subset (or another
    order) degrades each clip exactly as the full run does; other names follow the default ones."""
    index = DEGRADATIONS.index(name) if name in DEGRADATIONS else len(DEGRADATIONS) + requested.index(name)
    return base_seed + 1000 * index


def degrade_clip(name: str, clean: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (reference, degraded) for one named degradation (repeatable: x264 runs on one thread)."""
    reference, degraded, _ = degrade_clip_with_qp(name, clean, seed, export_qp=False)
    return reference, degraded


def degrade_clip_with_qp(
    name: str, clean: np.ndarray, seed: int, export_qp: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``degrade_clip`` plus the decoder's QP per 16x16 macroblock of every degraded frame (zeros where nothing
    was coded, or with ``export_qp`` False): see degrade.x264_roundtrip_with_qp."""
    rng = np.random.default_rng(seed)
    if name.startswith("sigma"):
        grid = (len(clean), (clean.shape[1] + 15) // 16, (clean.shape[2] + 15) // 16)
        return clean, degrade.add_gaussian_noise(clean, float(name[5:]), rng), np.zeros(grid, np.float32)
    if name.startswith("crf"):
        return clean, *degrade.x264_roundtrip_with_qp(clean, int(name[3:]), threads=1, export_qp=export_qp)
    if name == "lowlight":
        dark = degrade.darken(clean, 0.3, 1.3)
        noisy = degrade.add_poisson_gaussian_noise(dark, 0.008, 5.0, rng)
        return dark, *degrade.x264_roundtrip_with_qp(noisy, 30, threads=1, export_qp=export_qp)
    if name == "noise_crf30":
        noisy = degrade.add_gaussian_noise(clean, 10.0, rng)
        return clean, *degrade.x264_roundtrip_with_qp(noisy, 30, threads=1, export_qp=export_qp)
    raise ValueError(f"unknown degradation {name}")


def true_sigma(name: str) -> float | None:
    """The Gaussian sigma of a pure-noise degradation (sigma15 -> 15.0), None for the others."""
    return float(name[5:]) if name.startswith("sigma") else None


def run_ffmpeg(frames: np.ndarray, filter_chain: str, threads: int) -> tuple[np.ndarray, float]:
    """Filter raw RGB frames through an ffmpeg subprocess; returns (output, wall seconds)."""
    _count, height, width, _ = frames.shape
    command = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-threads",
        str(threads),
        "-filter_threads",
        str(threads),
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-r",
        "25",
        "-i",
        "-",
        "-vf",
        f"format=gbrp,{filter_chain}",
        "-pix_fmt",
        "rgb24",
        "-f",
        "rawvideo",
        "-",
    ]
    started = time.perf_counter()
    # note: FFmpeg 5.1 atadenoise hangs at EOF when given fewer frames than its window (9): use >= 9 frames
    result = subprocess.run(command, input=frames.tobytes(), capture_output=True, check=True, timeout=600)
    seconds = time.perf_counter() - started
    output = np.frombuffer(result.stdout, np.uint8)
    if output.size != frames.size:
        raise RuntimeError(f"ffmpeg {filter_chain} returned {output.size} bytes, expected {frames.size}")
    return output.reshape(frames.shape), seconds


class OnnxRestorer:
    """Sliding-window restoration with an exported model (edge frames replicated at the clip ends)."""

    def __init__(self, path: Path, threads: int) -> None:
        self.session = cpu_session(path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.window = int(meta["streamer.window"])
        self.reference = int(meta["streamer.reference_index"])
        self.multiple = int(meta["streamer.pad_multiple"])
        self.scale = int(meta.get("streamer.scale", "1"))  # an upscaling model's output is this many times larger
        # a recurrent model gets the state its previous call returned (at the clip's first frame: the reference)
        self.recurrent = "state" in [item.name for item in self.session.get_inputs()]

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, float]:
        count, height, width, _ = frames.shape
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        planar = frames.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        planar = np.pad(planar, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="edge")
        outputs, seconds = [], 0.0
        state = planar[:1]
        for index in range(count):
            picks = np.clip(np.arange(self.window) - self.reference + index, 0, count - 1)
            window = planar[picks].reshape(1, -1, height + pad_h, width + pad_w)
            started = time.perf_counter()
            if self.recurrent:
                restored, state = self.session.run(["restored", "next_state"], {"frames": window, "state": state})
            else:
                restored = self.session.run(["restored"], {"frames": window})[0]
            seconds += time.perf_counter() - started
            outputs.append(restored[0, :, : height * self.scale, : width * self.scale])
        return degrade.to_uint8(np.stack(outputs).transpose(0, 2, 3, 1)), seconds


def tune_filter(name: str, pairs: list[tuple[np.ndarray, np.ndarray]], frames: int, threads: int) -> str:
    """Pick the grid setting with the best mean PSNR over the first ``frames`` frames of every clip."""
    best, best_score = FFMPEG_GRIDS[name][0], -1.0
    for setting in FFMPEG_GRIDS[name]:
        score = float(
            np.mean([psnr(run_ffmpeg(d[:frames], setting, threads)[0], c[:frames]) for c, d in pairs])
        )
        if score > best_score:
            best, best_score = setting, score
    return best


def tune_sigma(yardstick: OnnxYardstick, pairs: list[tuple[np.ndarray, np.ndarray]], frames: int) -> float:
    """Oracle noise level for a non-blind yardstick: the SIGMA_GRID value with the best mean PSNR."""
    scores = {
        sigma: float(np.mean([psnr(yardstick(d[:frames], sigma)[0], c[:frames]) for c, d in pairs]))
        for sigma in SIGMA_GRID
    }
    return max(scores, key=lambda sigma: scores[sigma])


def add_yardsticks(
    degradation: str,
    pairs: list[tuple[np.ndarray, np.ndarray]],
    yardsticks: dict[str, OnnxYardstick],
    args: argparse.Namespace,
    results: dict[str, MethodResult],
    methods: dict[str, Callable[[np.ndarray], tuple[np.ndarray, float]]],
) -> dict[str, int]:
    """Add the yardstick rows of one degradation; returns their frame limits per clip."""
    limits: dict[str, int] = {}
    sigma = true_sigma(degradation)
    if sigma is not None and args.bm3d_frames > 0:
        results["bm3d"] = MethodResult(setting=f"bm3d_rgb sigma_psd={sigma:g}/255 (true sigma)")
        methods["bm3d"] = functools.partial(bm3d_restore, sigma=sigma)
        limits["bm3d"] = args.bm3d_frames
    for name, yardstick in yardsticks.items():
        if sigma is None:
            chosen = tune_sigma(yardstick, pairs, args.yardstick_tune_frames)
            setting = f"sigma={chosen:g} (oracle of {'/'.join(f'{v:g}' for v in SIGMA_GRID)})"
        else:
            chosen, setting = sigma, f"sigma={sigma:g} (true sigma)"
        results[name] = MethodResult(setting=setting)
        methods[name] = functools.partial(yardstick, sigma=chosen)
        if args.yardstick_frames:
            limits[name] = args.yardstick_frames
    return limits


def evaluate_degradation(
    degradation: str,
    pairs: list[tuple[np.ndarray, np.ndarray]],
    models: dict[str, OnnxRestorer],
    yardsticks: dict[str, OnnxYardstick],
    args: argparse.Namespace,
) -> dict[str, MethodResult]:
    results: dict[str, MethodResult] = {"input": MethodResult(setting="degraded input")}
    methods: dict[str, Callable[[np.ndarray], tuple[np.ndarray, float]]] = {}
    limits = {name: args.slow_frames for name in SLOW_FILTERS}
    for name in args.filters:
        limit = 2 if name in SLOW_FILTERS else args.tune_frames
        setting = tune_filter(name, pairs, limit, args.threads)
        results[name] = MethodResult(setting=setting)
        methods[name] = functools.partial(run_ffmpeg, filter_chain=setting, threads=args.threads)
    for name, model in models.items():
        results[name] = MethodResult(setting="onnxruntime CPU")
        methods[name] = model
    limits.update(add_yardsticks(degradation, pairs, yardsticks, args, results, methods))
    for clean, degraded in pairs:
        results["input"].psnr.append(psnr(degraded, clean))
        results["input"].ssim.append(ssim(degraded, clean))
        results["input"].flicker.append(flicker(degraded, clean))
        baseline_seconds = run_ffmpeg(degraded, "null", args.threads)[1]
        for name, method in methods.items():
            count = min(limits.get(name, len(clean)), len(clean))
            restored, seconds = method(degraded[:count])
            result = results[name]
            if name in args.filters:
                result.baseline_seconds += baseline_seconds * count / len(clean)
            result.psnr.append(psnr(restored, clean[:count]))
            result.ssim.append(ssim(restored, clean[:count]))
            result.flicker.append(flicker(restored, clean[:count]) if count > 1 else float("nan"))
            result.frames += count
            result.seconds += seconds
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--clips", type=Path, nargs="+", help=f"video files or folders (default: {MEDIA / 'val'})"
    )
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="take the tail after --train-fraction of training clips (default: the first frames of val clips)",
    )
    parser.add_argument("--model", action="append", default=[], help="NAME=PATH.onnx (repeatable)")
    parser.add_argument(
        "--yardstick",
        action="append",
        default=None,
        help=f"NAME=PATH.onnx non-blind yardstick (repeatable; default ffdnet={FFDNET} when present)",
    )
    parser.add_argument("--no-yardstick", action="store_true", help="no ONNX yardstick rows")
    parser.add_argument(
        "--yardstick-frames", type=int, default=0, help="frames per clip for ONNX yardsticks (0: all)"
    )
    parser.add_argument(
        "--yardstick-tune-frames", type=int, default=3, help="frames per clip for a yardstick's oracle sigma"
    )
    parser.add_argument(
        "--bm3d-frames", type=int, default=2, help="frames per clip for BM3D on sigma rows (0: no BM3D)"
    )
    parser.add_argument("--degradations", nargs="+", default=list(DEGRADATIONS))
    parser.add_argument("--filters", nargs="*", default=list(FFMPEG_GRIDS))
    parser.add_argument("--frames", type=int, default=30, help="frames per clip")
    parser.add_argument(
        "--slow-frames", type=int, default=6, help="frames per clip for slow filters (nlmeans)"
    )
    parser.add_argument(
        "--tune-frames", type=int, default=12, help="frames per clip for the filter grid search (>= 9)"
    )
    parser.add_argument("--train-fraction", type=float, default=0.6, help="with --held-out")
    parser.add_argument("--size", type=frame_size, default="640x360", help="WxH the clips are resized to")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, required=True)
    return parser.parse_args(argv)


def read_cleans(args: argparse.Namespace, size: tuple[int, int]) -> tuple[list[Path], list[np.ndarray]]:
    """The clips and their clean frames: the first --frames of val clips, or held-out tails (--held-out)."""
    default = MEDIA / ("clips" if args.held_out else "val")
    if args.clips is None and not default.exists():
        raise SystemExit(f"no clips: {default} does not exist; pass --clips VIDEO_OR_FOLDER ...")
    clips = list_clips(args.clips or [default])
    cleans = []
    for clip in clips:
        start, stop = 0, degrade.count_frames(clip)
        if args.held_out:
            _, (start, stop) = degrade.split_bounds(stop, args.train_fraction)
        cleans.append(degrade.read_clip(clip, start, min(stop, start + args.frames), size))
    return clips, cleans


def load_yardsticks(args: argparse.Namespace) -> dict[str, OnnxYardstick]:
    if args.no_yardstick:
        return {}
    specs = args.yardstick if args.yardstick is not None else [f"ffdnet={FFDNET}"] if FFDNET.exists() else []
    return {spec.split("=", 1)[0]: OnnxYardstick(Path(spec.split("=", 1)[1]), args.threads) for spec in specs}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if min(args.frames, args.tune_frames) < 9:
        raise SystemExit(
            "--frames and --tune-frames must be >= 9 (FFmpeg atadenoise hangs on shorter inputs)"
        )
    width, height = args.size
    clips, cleans = read_cleans(args, (width, height))
    models = {
        spec.split("=", 1)[0]: OnnxRestorer(Path(spec.split("=", 1)[1]), args.threads) for spec in args.model
    }
    yardsticks = load_yardsticks(args)
    names = [clip.stem for clip in clips]
    all_results: dict[str, dict[str, MethodResult]] = {}
    source = (
        f"held-out frames of training clips (the tail after {args.train_fraction:g})"
        if args.held_out
        else "val clips (scenes never trained on), the first frames"
    )
    report = [
        f"Clips: {len(clips)} {source}, {args.frames} frames each at {width}x{height}; nlmeans on the first "
        f"{args.slow_frames} frames only; bm3d on the first {args.bm3d_frames} (sigma rows only); "
        f"ONNX yardsticks on {args.yardstick_frames or 'all'}. PSNR columns are per clip (dB).\n"
    ]
    for name in args.degradations:
        seed = degradation_seed(name, args.degradations, args.seed)
        pairs = [degrade_clip(name, clean, seed + k) for k, clean in enumerate(cleans)]
        all_results[name] = evaluate_degradation(name, pairs, models, yardsticks, args)
        title = f"{name}, held-out frames of training clips" if args.held_out else name
        report.append(markdown_table(title, names, all_results[name]))
        print(report[-1], flush=True)
    write_results(args.out_dir, report, names, all_results)


if __name__ == "__main__":
    main()
