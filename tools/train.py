"""Train a temporal-window restoration model (engines/arch.py) for blind denoising + H.264 artifact removal.

Data: real clips (only the first ``--train-fraction`` of each clip's frames; the rest is held out for
tools/eval.py) and pseudo-videos made from still photos with random global motion. A cache of short sequences
(clean + codec-degraded, x264 in the loop) is built once under ``--cache``; sensor-noise-only samples are also
synthesised on the fly from the cached clean sequences. Example:

    python -m tools.train --clips /data/clips --stills /data/stills/kodak24 /data/stills/cbsd68 \
        --cache /scratch/cache.npz --out /scratch/run1 --steps 20000 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from engines.arch import (
    PRESETS,
    ArchConfig,
    WindowRestorer,
    build_model,
    deepen_state,
    preset,
    retarget_state,
    widen_state,
)
from tools import degrade
from tools.arguments import frame_size
from tools.qat import (
    QuantSimulation,
    checkpoint_weights,
    load_checkpoint_weights,
    residual_range_argument,
    save_checkpoint,
)
from tools.training_cache import CACHE_PROFILES, load_caches


def synthesise_noise(clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """On-the-fly sensor noise (Gaussian sigma 0-50, Poisson-Gaussian, or low light) without the codec."""
    choice = rng.random()
    if choice < 0.5:
        return clean, degrade.add_gaussian_noise(clean, rng.uniform(0, 50), rng)
    if choice < 0.8:
        return clean, degrade.add_poisson_gaussian_noise(clean, rng.uniform(0, 0.03), rng.uniform(0, 15), rng)
    dark = degrade.darken(clean, rng.uniform(0.12, 0.6), rng.uniform(1.0, 1.6))
    return dark, degrade.add_poisson_gaussian_noise(dark, rng.uniform(0, 0.01), rng.uniform(1, 12), rng)


def to_tensor(windows: np.ndarray) -> torch.Tensor:
    """uint8 [B, N, H, W, 3] -> float [B, N*3, H, W] in [0, 1] (frames oldest first)."""
    batch, count, height, width, _ = windows.shape
    tensor = torch.from_numpy(np.ascontiguousarray(windows)).permute(0, 1, 4, 2, 3)
    return tensor.reshape(batch, count * 3, height, width).float().div_(255.0)


def flip_and_transpose(
    clean: np.ndarray, noisy: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The same random horizontal flip, vertical flip and transpose of two aligned runs [N, H, W, 3]."""
    if rng.random() < 0.5:
        clean, noisy = clean[:, :, ::-1], noisy[:, :, ::-1]
    if rng.random() < 0.5:
        clean, noisy = clean[:, ::-1], noisy[:, ::-1]
    if rng.random() < 0.5:
        clean, noisy = clean.transpose(0, 2, 1, 3), noisy.transpose(0, 2, 1, 3)
    return clean, noisy


def sample_batch(
    targets: np.ndarray,
    degraded: np.ndarray,
    config: ArchConfig,
    batch: int,
    crop: int,
    onfly_fraction: float,
    rng: np.random.Generator,
    sequence_weights: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    window = config.window
    inputs = np.empty((batch, window, crop, crop, 3), np.uint8)
    labels = np.empty((batch, crop, crop, 3), np.uint8)
    length, size = targets.shape[1], targets.shape[2]
    for item in range(batch):
        if sequence_weights is None:
            sequence = int(rng.integers(0, len(targets)))
        else:
            sequence = int(rng.choice(len(targets), p=sequence_weights))
        first = int(rng.integers(0, length - window + 1))
        top, left = (int(v) for v in rng.integers(0, size - crop + 1, size=2))
        span = (sequence, slice(first, first + window), slice(top, top + crop), slice(left, left + crop))
        clean = targets[span]
        noisy = degraded[span]
        if rng.random() < onfly_fraction:
            clean, noisy = synthesise_noise(clean, rng)
        clean, noisy = flip_and_transpose(clean, noisy, rng)
        if config.reference_index == window // 2 and window % 2 == 1 and rng.random() < 0.5:
            clean, noisy = clean[::-1], noisy[::-1]
        inputs[item] = noisy
        labels[item] = clean[config.reference_index]
    return to_tensor(inputs), to_tensor(labels[:, None])


def psnr(restored: torch.Tensor, clean: torch.Tensor) -> float:
    mse = torch.mean((restored - clean) ** 2, dim=(1, 2, 3)).clamp_min(1e-10)
    return float(torch.mean(10 * torch.log10(1.0 / mse)))


def make_validation(
    targets: np.ndarray, degraded: np.ndarray, config: ArchConfig, seed: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Fixed validation sets from held-back cache sequences: Gaussian sigma 25, and the cached mix."""
    rng = np.random.default_rng(seed + 1)
    first = (targets.shape[1] - config.window) // 2
    span = slice(first, first + config.window)
    clean = targets[:, span]
    reference = to_tensor(clean[:, config.reference_index][:, None])
    sigma25 = degrade.add_gaussian_noise(clean, 25.0, rng)
    return {
        "sigma25": (to_tensor(sigma25), reference),
        "mixed": (to_tensor(degraded[:, span]), reference),
    }


@torch.no_grad()
def validate(
    model: WindowRestorer, sets: dict[str, tuple[torch.Tensor, torch.Tensor]], device: str
) -> dict[str, float]:
    model.eval()
    scores: dict[str, float] = {}
    for name, (noisy, clean) in sets.items():
        outputs = [model(noisy[i : i + 16].to(device)).cpu() for i in range(0, len(noisy), 16)]
        scores[name] = psnr(torch.cat(outputs), clean)
    model.train()
    return scores


def input_psnr(sets: dict[str, tuple[torch.Tensor, torch.Tensor]], config: ArchConfig) -> dict[str, float]:
    start = 3 * config.reference_index
    return {name: psnr(noisy[:, start : start + 3], clean) for name, (noisy, clean) in sets.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=Path, nargs="*", default=[], help="video files or folders of videos")
    parser.add_argument("--stills", type=Path, nargs="*", default=[], help="folders of still photos")
    parser.add_argument(
        "--cache",
        type=Path,
        nargs="+",
        required=True,
        help="cache files (.npz), built when missing; validation comes from the first",
    )
    # argparse %-formats help strings, so the profiles' percent signs are doubled
    profiles = ", ".join(f"{name} ({spec.describe()})" for name, spec in CACHE_PROFILES.items()).replace(
        "%", "%%"
    )
    parser.add_argument(
        "--cache-profile",
        choices=list(CACHE_PROFILES),
        nargs="+",
        default=["mixed"],
        help=f"degradation mix of each cache built (one per --cache, last one repeats): {profiles}",
    )
    parser.add_argument(
        "--cache-weights",
        type=float,
        nargs="+",
        help="relative sampling weight of each --cache (default: every sequence equally likely)",
    )
    parser.add_argument("--build-cache-only", action="store_true", help="build missing caches and exit")
    parser.add_argument(
        "--init",
        type=Path,
        help="fine-tune: start from this checkpoint's weights (fresh optimiser, step 0); a shallower model is "
        "grown to --depth with identity layers (Net2Deeper) and to --width by splitting units (Net2Wider); "
        "another --window keeps the shared frames' weights by offset (new frames start at zero) and --causal from "
        "a centred checkpoint remaps the window by temporal distance",
    )
    parser.add_argument("--out", type=Path, required=True, help="run folder for checkpoints and log")
    parser.add_argument("--preset", default="lite", choices=list(PRESETS), help="model design (engines/arch.py)")
    parser.add_argument("--causal", action="store_true", help="restore the newest frame of the window")
    parser.add_argument("--depth", type=int, help="hidden 3x3 layers (default: the preset's)")
    parser.add_argument("--width", type=int, help="hidden channels (default: the preset's)")
    parser.add_argument(
        "--context-width",
        type=int,
        help="channels of a low-resolution context path (engines/arch_context.py; 0 = none; default: the preset's); "
        "one the --init checkpoint lacks starts adding nothing",
    )
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--cache-sequences", type=int, default=2400)
    parser.add_argument("--sequence-length", type=int, default=12)
    parser.add_argument("--sequence-size", type=int, default=128)
    parser.add_argument(
        "--val-sequences", type=int, default=64, help="cache sequences held back for validation"
    )
    parser.add_argument(
        "--clip-size", type=frame_size, default=(640, 360), metavar="WxH", help="largest WxH clips are resized to before cropping"
    )
    parser.add_argument(
        "--clip-downscale",
        type=float,
        default=1.0,
        help="decode each clip at least this many times smaller than its native size (2 hides most of the "
        "sources' own H.264 blocking, so the targets are clean)",
    )
    parser.add_argument(
        "--train-fraction", type=float, default=0.6, help="leading share of each clip to train on"
    )
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument(
        "--stop-at", type=int, help="stop (checkpointed) at this step, keeping the --steps schedule"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--loss",
        choices=["l1", "l2"],
        default="l1",
        help="l2 (MSE) optimises PSNR directly; l1 is more robust",
    )
    parser.add_argument(
        "--onfly-fraction", type=float, default=0.35, help="share of noise-only synthetic samples"
    )
    parser.add_argument(
        "--qat",
        action="store_true",
        help="quantisation-aware fine-tuning: round the body to int8 in the forward pass as tools/quantize.py "
        "does (use with --init and a low --lr); validation then scores the int8 behaviour",
    )
    parser.add_argument(
        "--qat-calibration-batches", type=int, default=32, help="training batches that set activation ranges"
    )
    parser.add_argument(
        "--qat-residual-range",
        type=residual_range_argument,
        help="with --qat: round the residual in [-R, R] instead of its calibrated range (finer steps, rare "
        "extremes saturate); quantise the result with tools/quantize.py --residual-range R",
    )
    parser.add_argument("--val-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.qat_residual_range is not None and not args.qat:
        parser.error("--qat-residual-range needs --qat")
    return args


def cosine_factor(step: int, total: int, warmup: int = 200) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))


def grown_state(saved: dict[str, Any], config: ArchConfig, seed: int) -> dict[str, torch.Tensor]:
    """A checkpoint's weights grown to ``config``: wider (Net2Wider), retargeted to its window and reference
    frame, deeper (Net2Deeper), so a model started from them computes what the checkpoint did. A checkpoint
    without a config is taken to have ``config``'s shape."""
    old = saved.get("config", config.to_dict())
    depth, window, reference = (int(old[key]) for key in ("depth", "window", "reference_index"))
    state = widen_state(saved["model"], depth, config.width, seed=seed)
    if (window, reference) != (config.window, config.reference_index):
        state = retarget_state(state, window, config.window, reference, config.reference_index)
    return deepen_state(state, depth, config.depth)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = preset(args.preset, causal=args.causal, window=args.window)
    if args.depth is not None:
        config = dataclasses.replace(config, depth=args.depth)
    if args.width is not None:
        config = dataclasses.replace(config, width=args.width)
    if args.context_width is not None:
        config = dataclasses.replace(config, context_width=args.context_width)
    train_targets, train_degraded, val_targets, val_degraded, weights = load_caches(args)
    if args.build_cache_only:
        return
    val_sets = make_validation(val_targets, val_degraded, config, args.seed)
    model = build_model(config).to(args.device)
    if args.init is not None:
        # grown on the CPU (the surgery makes new tensors there); load_state_dict copies to the model's device
        grown = grown_state(torch.load(args.init, map_location="cpu", weights_only=False), config, args.seed)
        # A detail or context path the checkpoint lacks keeps its fresh (near-zero output) weights: step 0 computes
        # what the checkpoint did.
        fresh = {key: value for key, value in model.state_dict().items() if key.startswith(("detail.", "context."))}
        model.load_state_dict({**fresh, **grown})
    # Rounding is attached before the optimiser is made so that resumed optimiser state lines up.
    simulation = QuantSimulation(model, args.qat_residual_range) if args.qat else None
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    loss_function = torch.nn.functional.mse_loss if args.loss == "l2" else torch.nn.functional.l1_loss
    step, elapsed, best = 0, 0.0, -1.0
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = args.out / "last.pt"
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=args.device, weights_only=False)
        load_checkpoint_weights(model, simulation, state, checkpoint_path)
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        step, elapsed, best = state["step"], state["elapsed"], state["best"]

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        return sample_batch(
            train_targets, train_degraded, config, args.batch, args.crop, args.onfly_fraction, rng, weights
        )

    if simulation is not None and step == 0:
        calibration = (next_batch()[0].to(args.device) for _ in range(args.qat_calibration_batches))
        simulation.calibrate(model, calibration)
    log = (args.out / "log.jsonl").open("a")
    log.write(json.dumps({"event": "start", "step": step, "input_psnr": input_psnr(val_sets, config)}) + "\n")
    progress = tqdm(total=args.steps, initial=step, desc="train", dynamic_ncols=True)
    scores: dict[str, float] = {}
    stop = min(args.steps, args.stop_at) if args.stop_at else args.steps
    while step < stop:
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = args.lr * cosine_factor(step, args.steps)
        noisy, clean = next_batch()
        loss = loss_function(model(noisy.to(args.device)), clean.to(args.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        elapsed += time.perf_counter() - started
        progress.update(1)
        if step % args.val_every == 0 or step == stop:
            scores = validate(model, val_sets, args.device)
            state = {
                **checkpoint_weights(model, simulation),
                "optimizer": optimizer.state_dict(),
                "rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "step": step,
                "elapsed": elapsed,
                "best": best,
                "config": config.to_dict(),
                "device": args.device,
                "args": {k: str(v) for k, v in vars(args).items()},
                "val": scores,
            }
            if scores["sigma25"] + scores["mixed"] > best:
                best = scores["sigma25"] + scores["mixed"]
                state["best"] = best
                torch.save(state, args.out / "best.pt")
            save_checkpoint(state, checkpoint_path)
            log.write(
                json.dumps({"step": step, "loss": loss.item(), "elapsed": elapsed, "val": scores}) + "\n"
            )
            log.flush()
        progress.set_postfix(loss=f"{loss.item():.4f}", **{k: f"{v:.2f}" for k, v in scores.items()})
    progress.close()
    log.close()


if __name__ == "__main__":
    main()
