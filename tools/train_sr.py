"""Train the x2 super-resolution model (engines/arch_sr.py) from tools/train.py's sequence caches.

Each sample is a window of clean frames from a cache (or their cached degraded twin: noise, H.264, low light),
cropped, flipped and transposed like tools/train.py's, then downscaled 2x on the fly with a kernel picked at
random per batch (a 2x2 box average, or an antialiased bilinear or bicubic), so the model does not learn one
camera scaler's fingerprint; a share of the clean windows also get mild Gaussian noise after the downscale (what
a substream's sensor adds). The target is the reference frame's clean crop at full size. The last
``--val-sequences`` sequences of the caches are held back for validation (bicubic and the model, PSNR).
Example (``../shared/media/val`` never enters a cache, so tools/eval_sr.py scores scenes the model did not see):

    python -m tools.train_sr --cache /scratch/long_mixed.npz --out /scratch/sr2 --steps 6000 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

from engines.arch import build_model, preset
from tools.train import cosine_factor, flip_and_transpose, psnr, to_tensor

KERNELS = ("box", "bilinear", "bicubic")


def downscale(frames: torch.Tensor, kernel: str, factor: int = 2) -> torch.Tensor:
    """[B, C, H, W] in [0, 1] made ``factor`` times smaller with ``kernel`` (all antialiased), rounded to 8 bits."""
    if kernel == "box":
        small = functional.avg_pool2d(frames, factor)
    else:
        size = (frames.shape[-2] // factor, frames.shape[-1] // factor)
        small = functional.interpolate(frames, size=size, mode=kernel, antialias=True, align_corners=False)
    return torch.round(small.clamp(0, 1) * 255) / 255


def build_coded_cache(targets: np.ndarray, path: Path, seed: int = 0) -> np.ndarray:
    """Every cached sequence made 2x smaller (a kernel of KERNELS at random), given Gaussian noise of sigma 0-8 half
    of the time, and coded by x264 at CRF 20-36 (no B-frames) at that size: a camera's substream, whose coding
    happens after its scaler. Saved to ``path`` (about a minute per 300 sequences on 2 cores)."""
    from tools import degrade

    rng = np.random.default_rng(seed)
    count, length, height, width, _ = targets.shape
    coded = np.empty((count, length, height // 2, width // 2, 3), np.uint8)
    for index in range(count):
        frames = to_tensor(targets[index][None]).reshape(length, 3, height, width)
        small = downscale(frames, KERNELS[int(rng.integers(0, len(KERNELS)))])
        image = (small * 255).round().byte().permute(0, 2, 3, 1).numpy()
        if rng.random() < 0.5:
            image = degrade.add_gaussian_noise(image, float(rng.uniform(0, 8)), rng)
        coded[index] = degrade.x264_roundtrip(image, int(rng.integers(20, 37)), bframes=0, threads=1)
    with path.open("wb") as file:  # np.save(path) would add ".npy" to another suffix
        np.save(file, coded)
    return coded


def sample_batch(
    targets: np.ndarray, degraded: np.ndarray, sequences: int, window: int, reference: int, batch: int, crop: int,
    degraded_fraction: float, noise_fraction: float, rng: np.random.Generator, coded: np.ndarray | None = None,
    coded_fraction: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(low-resolution windows [B, N*3, crop/2, crop/2], clean reference frames [B, 3, crop, crop]); a
    ``coded_fraction`` of the windows come from ``coded`` (build_coded_cache), the rest are made smaller here."""
    length, size = targets.shape[1], targets.shape[2]
    windows = np.empty((batch, window, crop, crop, 3), np.uint8)
    labels = np.empty((batch, crop, crop, 3), np.uint8)
    small_windows: dict[int, np.ndarray] = {}
    for item in range(batch):
        sequence = int(rng.integers(0, sequences))
        first = int(rng.integers(0, length - window + 1))
        top, left = (2 * int(value) for value in rng.integers(0, (size - crop) // 2 + 1, size=2))
        span = (sequence, slice(first, first + window), slice(top, top + crop), slice(left, left + crop))
        clean = targets[span]
        from_coded = coded is not None and rng.random() < coded_fraction
        if coded is not None and from_coded:  # already small: the same crop at half the size
            source = coded[sequence, slice(first, first + window), slice(top // 2, (top + crop) // 2),
                           slice(left // 2, (left + crop) // 2)]
        else:
            source = degraded[span] if rng.random() < degraded_fraction else clean
        clean, source = flip_and_transpose(clean, source, rng)
        if reference == window // 2 and rng.random() < 0.5:
            clean, source = clean[::-1], source[::-1]
        labels[item] = clean[reference]
        if from_coded:
            small_windows[item] = source
            windows[item] = 0
        else:
            windows[item] = source
    frames = to_tensor(windows)  # [B, N*3, crop, crop]
    small = downscale(frames, KERNELS[int(rng.integers(0, len(KERNELS)))])
    noisy = torch.from_numpy(rng.random(batch) < noise_fraction)
    for item in small_windows:
        noisy[item] = False
    if bool(noisy.any()):
        sigma = torch.from_numpy(rng.uniform(0, 10, batch).astype(np.float32))[:, None, None, None] / 255
        noise = torch.randn(small.shape, generator=torch.Generator().manual_seed(int(rng.integers(1 << 31)))) * sigma
        small = torch.where(noisy[:, None, None, None], torch.round((small + noise).clamp(0, 1) * 255) / 255, small)
    for item, window_frames in small_windows.items():
        small[item] = to_tensor(np.ascontiguousarray(window_frames)[None])[0]
    return small, to_tensor(labels[:, None])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, required=True, help="a tools/train.py cache (.npz: targets, degraded)")
    parser.add_argument("--out", type=Path, required=True, help="run folder for checkpoints and log")
    parser.add_argument("--preset", default="sr2")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=96, help="output crop (the input is half of it)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--degraded-fraction", type=float, default=0.5, help="windows from the cache's degraded twin")
    parser.add_argument("--noise-fraction", type=float, default=0.3, help="windows given noise after the downscale")
    parser.add_argument("--coded-cache", type=Path, help="the cache's sequences made smaller and coded by x264 at "
                        "that size (.npy; built when missing): a substream's input")
    parser.add_argument("--coded-fraction", type=float, default=0.5, help="windows from --coded-cache")
    parser.add_argument("--build-coded-cache-only", action="store_true", help="build --coded-cache and exit")
    parser.add_argument("--init", type=Path, help="start from this checkpoint's weights (of the same preset)")
    parser.add_argument("--val-sequences", type=int, default=64)
    parser.add_argument("--val-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = preset(args.preset)
    with np.load(args.cache) as cache:
        targets, degraded = cache["targets"], cache["degraded"]
    sequences = len(targets) - args.val_sequences
    if sequences < 1:
        raise SystemExit(f"{args.cache} has {len(targets)} sequences: too few for {args.val_sequences} held back")
    coded = None
    if args.coded_cache is not None:
        coded = np.load(args.coded_cache) if args.coded_cache.exists() else build_coded_cache(targets, args.coded_cache)
        if coded.shape[:2] != targets.shape[:2] or coded.shape[2] * 2 != targets.shape[2]:
            raise SystemExit(f"{args.coded_cache} {coded.shape} is not {args.cache}'s sequences made 2x smaller")
        if args.build_coded_cache_only:
            return
    model = build_model(config)
    if args.init is not None:
        model.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=False)["model"])
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    val_rng = np.random.default_rng(args.seed + 1)
    val_inputs, val_labels = sample_batch(targets[sequences:], degraded[sequences:], args.val_sequences, config.window,
                                          config.reference_index, 64, args.crop, 0.5, 0.0, val_rng,
                                          None if coded is None else coded[sequences:], 0.5)
    start = 3 * config.reference_index
    bicubic = functional.interpolate(val_inputs[:, start : start + 3], scale_factor=2, mode="bicubic",
                                     align_corners=False).clamp(0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "log.jsonl").open("a")
    log.write(json.dumps({"event": "start", "bicubic_psnr": psnr(bicubic, val_labels), "config": config.to_dict()})
              + "\n")
    best, elapsed = -1.0, 0.0
    for step in range(1, args.steps + 1):
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = args.lr * cosine_factor(step - 1, args.steps)
        inputs, labels = sample_batch(targets, degraded, sequences, config.window, config.reference_index, args.batch,
                                      args.crop, args.degraded_fraction, args.noise_fraction, rng, coded,
                                      args.coded_fraction)
        loss = functional.l1_loss(model(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        elapsed += time.perf_counter() - started
        if step % args.val_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                score = psnr(torch.cat([model(val_inputs[i : i + 16]) for i in range(0, 64, 16)]), val_labels)
            model.train()
            state = {"model": model.state_dict(), "config": config.to_dict(), "step": step, "elapsed": elapsed,
                     "val": {"psnr": score}, "args": {key: str(value) for key, value in vars(args).items()}}
            if score > best:
                best = score
                torch.save(state, args.out / "best.pt")
            torch.save(state, args.out / "last.pt")
            log.write(json.dumps({"step": step, "loss": loss.item(), "elapsed": elapsed, "val_psnr": score}) + "\n")
            log.flush()
            print(f"step {step}: loss {loss.item():.4f}, val {score:.2f} dB, {elapsed:.0f} s", flush=True)
    log.close()


if __name__ == "__main__":
    main()
