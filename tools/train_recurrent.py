"""Train a recurrent restorer: the window model plus a running estimate carried from frame to frame.

A recurrent model (``engines/arch.py``, ``recurrent=1``) blends each new reference frame into a running estimate
through a learned per-pixel gate and restores from that estimate and the window, so still parts of the scene
keep improving over many frames (EMVD's recursive fusion) at the cost of three small convolutions;
``--feedback output`` (``recurrent=2``) carries the restored frame instead, as EMVD does. Training unrolls it
over ``--unroll`` consecutive outputs of each cached sequence (back-propagating through the chain); the first
output of each chain gets the reference frame as its state, which is what the engine feeds at a stream's first
frame or after a gap. Every option of ``tools/train.py`` applies (caches, weights, crops, on-the-fly noise,
seeds); ``--init`` grows a trained window model (its state weights start at zero, so step 0 computes what it
did); ``--qat`` fine-tunes for the int8 twin (the trunk rounded as ``tools/quantize.py`` rounds it; quantise
with ``--ranges-from`` the checkpoint). Example:

    python -m tools.checkpoint_from_onnx --model engines/models/lite.onnx --preset lite --out /scratch/lite.pt
    python -m tools.train_recurrent --cache /scratch/mixed.npz --init /scratch/lite.pt --out /scratch/rec \\
        --steps 3000 --batch 8 --unroll 8 --lr 3e-4 --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch
from tqdm import tqdm

from engines.arch import ArchConfig, WindowRestorer, build_model, preset
from tools import degrade
from tools.qat import QuantSimulation, checkpoint_weights, load_checkpoint_weights, save_checkpoint
from tools.train import (
    cosine_factor,
    flip_and_transpose,
    grown_state,
    parse_args,
    synthesise_noise,
    to_tensor,
)
from tools.training_cache import load_caches


def still_scene(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fixed camera's view made from a moving run: its first frame held still, with a rectangle (a fifth to
    two thirds of each side, or none in a quarter of cases) where the run keeps moving, like a person crossing
    a static scene. Training sequences mostly move (hand-held clips, pseudo-videos), which teaches a recurrent
    model little about the still backgrounds of fixed cameras, where it gains most."""
    still = np.repeat(clean[:1], len(clean), axis=0)
    if rng.random() < 0.25:
        return still
    size = clean.shape[1]
    height, width = (int(rng.integers(size // 5, 2 * size // 3 + 1)) for _ in range(2))
    top, left = int(rng.integers(0, size - height + 1)), int(rng.integers(0, size - width + 1))
    still[:, top : top + height, left : left + width] = clean[:, top : top + height, left : left + width]
    return still


def codec_roundtrip(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A live camera's encoder on a run [N, H, W, 3]: x264 at CRF 26-40, no B-frames, one thread (repeatable).
    On a still scene with moderate noise (or any noise above CRF ~33) it codes the first frame's noise and then
    mostly skips, so that noise and the blocking stand still: averaging over time no longer removes them,
    which noise-only still scenes teach a recurrent model to expect."""
    crf = int(rng.integers(26, 41))
    return degrade.x264_roundtrip(np.ascontiguousarray(frames), crf, preset="veryfast", bframes=0, threads=1)


def sample_chains(
    targets: np.ndarray,
    degraded: np.ndarray,
    length: int,
    batch: int,
    crop: int,
    onfly_fraction: float,
    rng: np.random.Generator,
    weights: np.ndarray | None,
    still_fraction: float = 0.0,
    still_codec_fraction: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``batch`` aligned (clean, degraded) runs of ``length`` frames: uint8 [B, length, crop, crop, 3]; a
    ``still_fraction`` of them are fixed-camera scenes (``still_scene``) with on-the-fly sensor noise, and a
    ``still_codec_fraction`` of those are then sent through x264 (``codec_roundtrip``)."""
    clean_out = np.empty((batch, length, crop, crop, 3), np.uint8)
    noisy_out = np.empty_like(clean_out)
    count, frames, size = targets.shape[0], targets.shape[1], targets.shape[2]
    for item in range(batch):
        sequence = int(rng.integers(0, count)) if weights is None else int(rng.choice(count, p=weights))
        first = int(rng.integers(0, frames - length + 1))
        top, left = (int(v) for v in rng.integers(0, size - crop + 1, size=2))
        span = (sequence, slice(first, first + length), slice(top, top + crop), slice(left, left + crop))
        clean, noisy = targets[span], degraded[span]
        if rng.random() < still_fraction:
            clean, noisy = synthesise_noise(still_scene(clean, rng), rng)
            if rng.random() < still_codec_fraction:
                noisy = codec_roundtrip(noisy, rng)
        elif rng.random() < onfly_fraction:
            clean, noisy = synthesise_noise(clean, rng)
        clean, noisy = flip_and_transpose(clean, noisy, rng)
        if rng.random() < 0.5:
            clean, noisy = clean[::-1], noisy[::-1]
        clean_out[item], noisy_out[item] = clean, noisy
    return clean_out, noisy_out


def unroll(
    model: WindowRestorer, noisy: torch.Tensor, outputs: int
) -> list[torch.Tensor]:
    """Restore ``outputs`` consecutive frames of ``noisy`` [B, L, 3, H, W], each step's state going to the next
    (the first gets none: the model then starts from its reference frame)."""
    config = model.config
    batch, _length, _channels, height, width = noisy.shape
    restored: list[torch.Tensor] = []
    state: torch.Tensor | None = None
    for index in range(outputs):
        window = noisy[:, index : index + config.window].reshape(batch, -1, height, width)
        frame, state = model.step(window, state)
        restored.append(frame)
    return restored


def planar(frames: np.ndarray) -> torch.Tensor:
    """uint8 [B, L, H, W, 3] -> float [B, L, 3, H, W] in [0, 1]."""
    batch, length, height, width, _ = frames.shape
    return to_tensor(frames).reshape(batch, length, 3, height, width)


def chain_loss(
    model: WindowRestorer, clean: np.ndarray, noisy: np.ndarray, outputs: int
) -> torch.Tensor:
    config = model.config
    clean_t, noisy_t = planar(clean), planar(noisy)
    restored = unroll(model, noisy_t, outputs)
    losses = [
        torch.nn.functional.l1_loss(frame, clean_t[:, index + config.reference_index])
        for index, frame in enumerate(restored)
    ]
    return torch.stack(losses).mean()


@torch.no_grad()
def validate_chains(
    model: WindowRestorer, sets: dict[str, tuple[np.ndarray, np.ndarray]], outputs: int
) -> dict[str, float]:
    """PSNR of the last half of each chain's outputs (the recurrent state warmed up) and of its first."""
    model.eval()
    scores: dict[str, float] = {}
    config = model.config
    for name, (clean, noisy) in sets.items():
        first: list[float] = []
        late: list[float] = []
        for start in range(0, len(clean), 16):
            clean_t = planar(clean[start : start + 16])
            restored = unroll(model, planar(noisy[start : start + 16]), outputs)
            for index, frame in enumerate(restored):
                target = clean_t[:, index + config.reference_index]
                mse = torch.mean((frame - target) ** 2, dim=(1, 2, 3)).clamp_min(1e-10)
                value = (10 * torch.log10(1.0 / mse)).tolist()
                if index == 0:
                    first.extend(value)
                elif index >= outputs // 2:
                    late.extend(value)
        scores[name] = float(np.mean(late))
        scores[f"{name}_first"] = float(np.mean(first))
    model.train()
    return scores


def validation_sets(
    targets: np.ndarray, degraded: np.ndarray, length: int, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed + 1)
    clean = targets[:, :length]
    still = np.stack([still_scene(sequence, rng) for sequence in clean])
    return {
        "sigma25": (clean, degrade.add_gaussian_noise(clean, 25.0, rng)),
        "mixed": (clean, degraded[:, :length]),
        "still25": (still, degrade.add_gaussian_noise(still, 25.0, rng)),
    }


def grow_checkpoint(model: WindowRestorer, path: str, seed: int = 0) -> None:
    """Load a window model's (or a recurrent model's) weights: the recurrent parts the checkpoint lacks keep their
    initialisation (which leaves the window model's output as it was); weights the model has no place for are
    named and dropped. A narrower, shallower or otherwise windowed checkpoint is grown to the model first
    (``tools.train.grown_state``), so training starts from its output."""
    initial = grown_state(torch.load(path, map_location="cpu", weights_only=False), model.config, seed)
    state = model.state_dict()
    missing = [key for key in state if key not in initial]
    if any(not key.startswith(("state_", "gate.")) for key in missing):
        raise SystemExit(f"{path} does not match the model: missing {missing}")
    dropped = sorted(set(initial) - set(state))
    if dropped:
        print(f"{path}: not used by this model: {', '.join(dropped)}")
    state.update({key: value for key, value in initial.items() if key in state})
    model.load_state_dict(state)


def main(argv: list[str] | None = None) -> None:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--unroll", type=int, default=8, help="consecutive outputs per training chain")
    extra.add_argument(
        "--state-lr-scale", type=float, default=1.0, help="learning-rate factor of the recurrent parts (gate, fusion)"
    )
    extra.add_argument(
        "--freeze-window-model",
        action="store_true",
        help="train only the recurrent parts: the window model's weights (from --init) stay as they are",
    )
    extra.add_argument(
        "--still-fraction", type=float, default=0.0, help="share of chains made fixed-camera scenes (still_scene)"
    )
    extra.add_argument(
        "--still-codec-fraction",
        type=float,
        default=0.0,
        help="share of the fixed-camera scenes then coded by x264 at CRF 26-40 (codec_roundtrip)",
    )
    extra.add_argument(
        "--feedback",
        choices=("estimate", "output"),
        default="estimate",
        help="the state carried to the next frame: the blended reference (recurrent=1) or the restored frame (2)",
    )
    extra.add_argument(
        "--gate-context",
        action="store_true",
        help="give the gate a frame-wide cue (the mean of its features over the frame); grown from a model "
        "without one, it starts where that model was",
    )
    own, rest = extra.parse_known_args(argv)
    args = parse_args(rest)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config: ArchConfig = preset(args.preset, causal=args.causal, window=args.window, recurrent=True)
    config = dataclasses.replace(
        config, recurrent=2 if own.feedback == "output" else 1, gate_context=int(own.gate_context)
    )
    if args.depth is not None:
        config = dataclasses.replace(config, depth=args.depth)
    if args.width is not None:
        config = dataclasses.replace(config, width=args.width)
    length = own.unroll + config.window - 1
    train_targets, train_degraded, val_targets, val_degraded, weights = load_caches(args)
    if train_targets.shape[1] < length:
        raise SystemExit(f"--unroll {own.unroll} needs cached sequences of {length} frames")
    val_sets = validation_sets(val_targets, val_degraded, length, args.seed)
    model = build_model(config)
    if args.init is not None:
        grow_checkpoint(model, str(args.init), seed=args.seed)
    # the recurrent parts start from nothing beside a trained trunk: they learn at --state-lr-scale x the rate
    fresh = [param for name, param in model.named_parameters() if name.startswith(("state_", "gate."))]
    known = [param for name, param in model.named_parameters() if not name.startswith(("state_", "gate."))]
    groups = [{"params": fresh, "scale": own.state_lr_scale}]
    if own.freeze_window_model:
        for param in known:
            param.requires_grad_(False)
    else:
        groups.append({"params": known, "scale": 1.0})
    # --qat rounds the trunk as tools/quantize.py does; the gate, the state's fusion and the reference path read
    # the estimate and stay in float there, so they do here (QuantSimulation rounds only the body)
    simulation = QuantSimulation(model, args.qat_residual_range) if args.qat else None
    optimizer = torch.optim.Adam(groups, lr=args.lr)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = args.out / "last.pt"
    step, elapsed = 0, 0.0
    if checkpoint_path.exists():
        saved = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        load_checkpoint_weights(model, simulation, saved, checkpoint_path)
        optimizer.load_state_dict(saved["optimizer"])
        rng.bit_generator.state = saved["rng"]
        step, elapsed = saved["step"], saved["elapsed"]

    def next_chains() -> tuple[np.ndarray, np.ndarray]:
        return sample_chains(
            train_targets,
            train_degraded,
            length,
            args.batch,
            args.crop,
            args.onfly_fraction,
            rng,
            weights,
            own.still_fraction,
            own.still_codec_fraction,
        )

    if simulation is not None and step == 0:
        # ranges observed on each chain's first window (the state is then its reference frame, as in the
        # quantiser's calibration)
        first_windows = (
            planar(next_chains()[1])[:, : config.window].flatten(1, 2) for _ in range(args.qat_calibration_batches)
        )
        simulation.calibrate(model, first_windows)
    log = (args.out / "log.jsonl").open("a")
    if step == 0:
        log.write(json.dumps({"step": 0, "val": validate_chains(model, val_sets, own.unroll)}) + "\n")
        log.flush()
    stop = min(args.steps, args.stop_at) if args.stop_at else args.steps
    progress = tqdm(total=args.steps, initial=step, desc="train", dynamic_ncols=True)
    scores: dict[str, float] = {}
    while step < stop:
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = args.lr * group["scale"] * cosine_factor(step, args.steps)
        clean, noisy = next_chains()
        loss = chain_loss(model, clean, noisy, own.unroll)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        elapsed += time.perf_counter() - started
        progress.update(1)
        if step % args.val_every == 0 or step == stop:
            scores = validate_chains(model, val_sets, own.unroll)
            saved = {
                **checkpoint_weights(model, simulation),
                "optimizer": optimizer.state_dict(),
                "rng": rng.bit_generator.state,
                "step": step,
                "elapsed": elapsed,
                "config": config.to_dict(),
                "args": {**{k: str(v) for k, v in vars(args).items()}, **vars(own)},
                "val": scores,
            }
            save_checkpoint(saved, checkpoint_path)
            log.write(json.dumps({"step": step, "loss": loss.item(), "elapsed": elapsed, "val": scores}) + "\n")
            log.flush()
        progress.set_postfix(loss=f"{loss.item():.4f}", **{k: f"{v:.2f}" for k, v in scores.items()})
    progress.close()
    log.close()


if __name__ == "__main__":
    main()
