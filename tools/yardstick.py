"""Train and export an FFDNet-class yardstick: a full-resolution, single-frame, non-blind Gaussian denoiser.

Model (FFDNet colour, Zhang et al. 2018): PixelUnshuffle x2 of the RGB frame (12 channels) + a noise-level
map (sigma/255 everywhere) = 13 channels -> conv3x3 96 + ReLU -> 10 x (conv3x3 96 + ReLU) -> conv3x3 12, plus a
linear conv3x3 13 -> 12 skip initialised to minus the identity -> PixelShuffle x2, added to the noisy frame
(restored = clamp(noisy + output)): the body predicts the clean frame, as FFDNet does; no BatchNorm; ~0.85 M
parameters.

Training data: every clip (video or image-sequence folder) under ``--clips``, decoded at the smaller of
640x360 and half the native size (aspect kept, every ``--clip-step``-th frame), and the still sets under
``--stills``; never ../shared/media/val (those scenes are for evaluation only). Random 64-96 px crops, flips
and transposes, Gaussian noise with sigma uniform in [0, 55] (0-255 scale, rounded to uint8 like a real
frame) and the true sigma map as input. He (Kaiming) initialisation, the body's last layer scaled by 0.1.
Loss L1, Adam 1e-3 after a 50-step linear warm-up, with a cosine decay over the ``--minutes`` budget (or
``--steps``, whichever ends first). Checkpoints are resumable. Example:

    python -m tools.yardstick train --out /work/runs/yardstick --threads 2 --minutes 85
    python -m tools.yardstick export --checkpoint /work/runs/yardstick/checkpoint.pt \
        --onnx tools/yardsticks/ffdnet.onnx

ONNX contract: inputs ``noisy`` float32 [B, 3, H, W] in [0, 1] (H and W even) and ``sigma`` float32
[B, 1, 1, 1] = noise standard deviation / 255; output ``restored`` [B, 3, H, W] in [0, 1].
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tools import degrade
from tools.training_cache import list_clips

MEDIA = Path(__file__).resolve().parents[1].parent / "shared/media"
STILL_SETS = ("kodak24", "cbsd68", "mcmaster", "set14", "sun_hays80", "urban100_subset")
MAX_SIGMA = 55.0


class FFDNetColor(nn.Module):
    """FFDNet-style denoiser at half resolution (space-to-depth x2) with a noise-level map input.

    The body predicts the clean frame: a linear 3x3 skip from the input to the output, initialised to minus
    the identity on the frame's channels, cancels the noisy frame that the residual adds back, and learns how
    much of it to keep. Without it the body had to carry the noise through 12 layers and training crept
    (+1 dB at σ25 after 400 steps, against +4.6 dB with the skip after 300).
    """

    def __init__(self, width: int = 96, depth: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(13, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, 12, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.skip = nn.Conv2d(13, 12, 3, padding=1)
        convolutions = [layer for layer in self.body if isinstance(layer, nn.Conv2d)]
        for conv in convolutions:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        with torch.no_grad():
            convolutions[-1].weight.mul_(0.1)  # the body starts small
            self.skip.weight.zero_()
            if self.skip.bias is not None:
                self.skip.bias.zero_()
            for channel in range(12):
                self.skip.weight[channel, channel, 1, 1] = -1.0
        self.unshuffle = nn.PixelUnshuffle(2)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """noisy [B, 3, H, W] in [0, 1] (H, W even), sigma [B, 1, 1, 1] = std / 255."""
        packed = self.unshuffle(noisy)
        inputs = torch.cat([packed, torch.ones_like(packed[:, :1]) * sigma], dim=1)
        residual = self.shuffle(self.body(inputs) + self.skip(inputs))
        return torch.clamp(noisy + residual, 0.0, 1.0)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_frame(model: nn.Module, width: int, height: int) -> int:
    """Multiply-accumulates of one frame (all convolutions run at half resolution)."""
    positions = (width // 2) * (height // 2)
    return sum(
        m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1] * positions
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    )


def clip_size(native: tuple[int, int]) -> tuple[int, int]:
    """The smaller of 640x360 and half the native size, aspect kept, even dimensions."""
    width, height = native
    scale = min(0.5, 640 / width, 360 / height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def load_training_images(
    clips: list[Path], stills: list[Path], clip_step: int, max_frames: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(clip frames, still images) as uint8 [H, W, 3] arrays."""
    frames: list[np.ndarray] = []
    for clip in list_clips(clips):
        size = clip_size(degrade.native_size(clip))
        stop = min(degrade.count_frames(clip), clip_step * max_frames)
        frames += list(degrade.read_clip(clip, 0, stop, size, step=clip_step))
        print(f"loaded {clip.name} at {size[0]}x{size[1]}: {len(frames)} clip frames so far", flush=True)
    images = [degrade.load_still(path) for path in degrade.list_stills(stills)]
    print(f"loaded {len(images)} stills", flush=True)
    return frames, images


def sample_batch(
    pools: list[list[np.ndarray]], batch: int, crop: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(clean, noisy, sigma) tensors: crops from the pools (equal odds per non-empty pool), flips, noise."""
    filled = [pool for pool in pools if pool]
    crops = np.empty((batch, crop, crop, 3), np.uint8)
    for item in range(batch):
        pool = filled[int(rng.integers(0, len(filled)))]
        image = pool[int(rng.integers(0, len(pool)))]
        if min(image.shape[:2]) < crop:
            image = np.pad(
                image,
                ((0, max(0, crop - image.shape[0])), (0, max(0, crop - image.shape[1])), (0, 0)),
                mode="reflect",
            )
        top = int(rng.integers(0, image.shape[0] - crop + 1))
        left = int(rng.integers(0, image.shape[1] - crop + 1))
        patch = image[top : top + crop, left : left + crop]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if rng.random() < 0.5:
            patch = patch[::-1]
        if rng.random() < 0.5:
            patch = patch.transpose(1, 0, 2)
        crops[item] = patch
    clean = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div_(255.0)
    sigma = torch.from_numpy(rng.uniform(0, MAX_SIGMA, size=(batch, 1, 1, 1)).astype(np.float32)) / 255.0
    noise = torch.from_numpy(rng.standard_normal(clean.shape, dtype=np.float32))
    noisy = torch.clamp(torch.round((clean + noise * sigma) * 255.0) / 255.0, 0.0, 1.0)
    return clean, noisy, sigma


def validation_set(folder: Path, crop: int = 256) -> np.ndarray:
    """Centre crops of the first frame of every clip in ``folder`` at 640x360 (for reporting only)."""
    crops = []
    for clip in list_clips([folder]):
        frame = degrade.read_clip(clip, 0, 1, (640, 360))[0]
        top, left = (360 - crop) // 2, (640 - crop) // 2
        crops.append(frame[top : top + crop, left : left + crop])
    return np.stack(crops)


@torch.no_grad()
def validate(model: FFDNetColor, crops: np.ndarray, sigma: float, seed: int = 0) -> float:
    """Mean RGB PSNR at a known Gaussian sigma (fixed noise)."""
    from tools.eval import psnr

    noisy = degrade.add_gaussian_noise(crops, sigma, np.random.default_rng(seed))
    inputs = torch.from_numpy(noisy).permute(0, 3, 1, 2).float().div_(255.0)
    level = torch.full((len(crops), 1, 1, 1), sigma / 255.0)
    model.eval()
    restored = model(inputs, level).permute(0, 2, 3, 1).numpy()
    model.train()
    return psnr(degrade.to_uint8(restored), crops)


def train(args: argparse.Namespace) -> Path:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = args.out / "checkpoint.pt"
    model = FFDNetColor()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    step, elapsed = 0, 0.0
    if checkpoint_path.exists() and not args.restart:
        state = torch.load(checkpoint_path, map_location="cpu")
        model.load_state_dict(model_weights(state, checkpoint_path))
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        print(f"resumed at step {step} ({elapsed / 60:.1f} min)", flush=True)
    frames, images = load_training_images(args.clips, args.stills, args.clip_step, args.clip_frames)
    val_crops = validation_set(args.val) if args.val is not None and args.val.exists() else None
    rng = np.random.default_rng(args.seed + step)
    budget = args.minutes * 60.0
    started, last_save, running = time.monotonic() - elapsed, time.monotonic(), 0.0

    def save() -> None:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
        torch.save({**state, "elapsed": time.monotonic() - started}, checkpoint_path)

    while step < args.steps and time.monotonic() - started < budget:
        progress = max(step / args.steps, (time.monotonic() - started) / budget)
        warmup = min(1.0, (step + 1) / max(1, args.warmup_steps))
        rate = args.lr * warmup * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        for group in optimizer.param_groups:
            group["lr"] = rate
        crop = 2 * int(rng.integers(args.crop_min // 2, args.crop_max // 2 + 1))
        clean, noisy, sigma = sample_batch([frames, images], args.batch, crop, rng)
        loss = torch.nn.functional.l1_loss(model(noisy, sigma), clean)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        if step % args.log_every == 0:
            minutes = (time.monotonic() - started) / 60
            line = f"step {step} min {minutes:.1f} lr {optimizer.param_groups[0]['lr']:.2e} l1 {running:.5f}"
            if val_crops is not None and step % (args.log_every * args.val_every) == 0:
                line += f" val psnr s15 {validate(model, val_crops, 15):.2f} s25 {validate(model, val_crops, 25):.2f}"
            print(line, flush=True)
        if time.monotonic() - last_save > args.save_seconds:
            save()
            last_save = time.monotonic()
    save()
    if val_crops is not None:
        minutes = (time.monotonic() - started) / 60
        print(
            f"final step {step} min {minutes:.1f} val psnr s15 {validate(model, val_crops, 15):.2f} "
            f"s25 {validate(model, val_crops, 25):.2f}",
            flush=True,
        )
    return checkpoint_path


def export(model: FFDNetColor, path: Path, opset: int = 17) -> None:
    """Export to ONNX (dynamic batch and even H, W) with metadata the evaluation reads."""
    import onnx

    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    example = (torch.rand(1, 3, 64, 96), torch.full((1, 1, 1, 1), 25 / 255.0))
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad():
        torch.onnx.export(
            model,
            example,
            str(path),
            input_names=["noisy", "sigma"],
            output_names=["restored"],
            opset_version=opset,
            dynamic_axes={"noisy": dynamic, "sigma": {0: "batch"}, "restored": dynamic},
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    for key, value in {"streamer.yardstick": "ffdnet", "streamer.pad_multiple": "2"}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def model_weights(state: dict, path: Path) -> dict:
    """The checkpoint's model weights; a clear error for one of the earlier design (no skip, before 2026-12-06)."""
    if "skip.weight" not in state["model"]:
        raise SystemExit(
            f"{path} holds the earlier yardstick design (no linear skip): train it again with --restart"
        )
    return state["model"]


def load_checkpoint(path: Path) -> FFDNetColor:
    model = FFDNetColor()
    model.load_state_dict(model_weights(torch.load(path, map_location="cpu"), path))
    return model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("train", help="train (resumes from OUT/checkpoint.pt when it exists)")
    run.add_argument("--clips", type=Path, nargs="*", default=[MEDIA / "clips"], help="videos or folders")
    run.add_argument(
        "--stills", type=Path, nargs="*", default=[MEDIA / "stills" / name for name in STILL_SETS]
    )
    run.add_argument(
        "--val", type=Path, default=MEDIA / "val", help="clips for the logged PSNR (not trained)"
    )
    run.add_argument("--out", type=Path, default=Path("/work/runs/yardstick"))
    run.add_argument("--minutes", type=float, default=45.0, help="wall-clock budget (cosine decay over it)")
    run.add_argument("--steps", type=int, default=1_000_000, help="step budget (cosine decay over it)")
    run.add_argument("--batch", type=int, default=16)
    run.add_argument("--crop-min", type=int, default=64)
    run.add_argument("--crop-max", type=int, default=96)
    run.add_argument("--lr", type=float, default=1e-3, help="peak rate (after the warm-up, then cosine)")
    run.add_argument(
        "--warmup-steps", type=int, default=50, help="linear warm-up to the peak rate (0 = none)"
    )
    run.add_argument("--clip-step", type=int, default=4, help="use every N-th frame of a clip")
    run.add_argument("--clip-frames", type=int, default=60, help="at most this many frames per clip")
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--log-every", type=int, default=20)
    run.add_argument("--val-every", type=int, default=10, help="validate every N log lines")
    run.add_argument("--save-seconds", type=float, default=120.0)
    run.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    out = commands.add_parser("export", help="export a checkpoint to ONNX")
    out.add_argument("--checkpoint", type=Path, default=Path("/work/runs/yardstick/checkpoint.pt"))
    out.add_argument("--onnx", type=Path, default=Path("tools/yardsticks/ffdnet.onnx"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "train":
        train(args)
    else:
        model = load_checkpoint(args.checkpoint)
        export(model, args.onnx)
        print(
            f"exported {args.onnx}: {parameter_count(model)} parameters, "
            f"{macs_per_frame(model, 640, 360) / 1e9:.1f} GMAC per 640x360 frame"
        )


if __name__ == "__main__":
    main()
