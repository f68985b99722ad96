"""Controlled experiments on `lite` (issue 13): does a cue help (the decoder's QP, a noise level), which clean
targets, which trunk design.

Every live input is decoded H.264, and the decoder knows how coarsely each 16x16 block was quantised (its QP;
FFmpeg exports it with ``export_side_data=venc_params``). A noise-level estimate is the other cue the issue
names (FFDNet is told sigma). This tool measures what such a cue is worth before any engine or contract
carries it:

    build  sequences (8 frames, 128x128) from training clips and still sets, half of them coded with x264 and
           decoded with their QP maps (degrade.x264_roundtrip_with_qp), the rest noisy or noisy then coded;
           clips decoded at half their size by default (``--clip-downscale``, ``--clip-largest``: the data
           ablation, clean targets at their native size against half of it)
    train  fine-tunes `lite` (float) with one extra input: five planes, one per frame of the window, at the
           trunk's resolution (1/4 for `lite`), through a zero-initialised 1x1 conv into the first layer (``--qp-layers
           all``: into every hidden layer). ``--cue`` picks the planes: ``qp`` the decoder's QP (QP/51, 0 where
           nothing was coded); ``error`` the oracle, each 16x16 block's RMS error against the clean frame (no
           blind estimate can tell more about the noise level); ``estimate`` a blind frame-wide noise level
           (the median absolute 2x2 Haar diagonal coefficient / 0.6745). ``--arm blind`` feeds zeros, so the
           same weights, data and steps without the cue are the control. ``--from-scratch`` (blind) trains
           `lite`'s design untrained instead, at another ``--unshuffle`` / ``--width``: two designs on the same
           batches; ``--resume`` trains a checkpoint this command wrote on
    eval   val clips (eval.py's degradations and seeds, so the inputs are eval.py's bit for bit), float PSNR
           gain over the input per clip and mean, every model in one run
    plain  a blind-arm checkpoint's model as tools/train.py writes one (for --init, export_onnx, quantize)

    python -m tools.qp_probe build --clips $S/clips --stills $STILLS --out $W/qp_cache.npz
    python -m tools.qp_probe train --cache $W/qp_cache.npz --init $W/lite_v7.pt --arm cue --cue qp --out $W/qp.pt
    python -m tools.qp_probe eval --init $W/lite_v7.pt --model lite= --model qp=$W/qp.pt --clips $S/val
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engines.arch import ArchConfig, WindowRestorer, build_model, preset
from tools import degrade
from tools.arguments import frame_size
from tools.eval import degradation_seed, degrade_clip_with_qp, psnr
from tools.train import synthesise_noise
from tools.training_cache import clean_size, list_clips

QP_SCALE = 51.0  # H.264's largest QP
LENGTH, SIZE = 8, 128


def degrade_sequence(clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(degraded, QP maps) of one training sequence: coded only, noisy then coded, or noisy (QP 0)."""
    kind = rng.choice(["codec", "noise_codec", "noise"], p=[0.5, 0.3, 0.2])
    noisy = clean
    if kind != "codec":
        if rng.random() < 0.5:
            noisy = degrade.add_gaussian_noise(
                clean, rng.uniform(2, 25 if kind == "noise_codec" else 45), rng
            )
        else:
            noisy = degrade.add_poisson_gaussian_noise(clean, rng.uniform(0, 0.02), rng.uniform(0, 12), rng)
    if kind == "noise":
        return noisy, np.zeros((len(clean), clean.shape[1] // 16, clean.shape[2] // 16), np.float32)
    crf = int(rng.integers(26, 43)) if kind == "codec" else int(rng.integers(20, 39))
    preset_name = str(rng.choice(["veryfast", "medium"]))
    return degrade.x264_roundtrip_with_qp(noisy, crf, preset_name, 0 if rng.random() < 0.5 else None)


def build(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    clips = list_clips(args.clips)
    stills = degrade.list_stills(args.stills)
    targets = np.zeros((args.count, LENGTH, SIZE, SIZE, 3), np.uint8)
    degraded = np.zeros_like(targets)
    qp = np.zeros((args.count, LENGTH, SIZE // 16, SIZE // 16), np.float32)
    index = 0
    per_clip = (args.count // 2) // max(1, len(clips)) if stills else args.count // max(1, len(clips))
    for clip in clips:
        size = clean_size(degrade.native_size(clip), args.clip_largest, args.clip_downscale)
        frames = degrade.read_clip(clip, 0, min(degrade.count_frames(clip), 300), size)
        if len(frames) < LENGTH or min(frames.shape[1:3]) < SIZE:
            continue
        for _ in range(per_clip):
            first = int(rng.integers(0, len(frames) - LENGTH + 1))
            top, left = (int(rng.integers(0, extent - SIZE + 1)) for extent in frames.shape[1:3])
            targets[index] = frames[first : first + LENGTH, top : top + SIZE, left : left + SIZE]
            degraded[index], qp[index] = degrade_sequence(targets[index], rng)
            index += 1
    while index < args.count and stills:
        image = degrade.load_still(stills[int(rng.integers(0, len(stills)))])
        if min(image.shape[:2]) < SIZE + 8:
            continue
        targets[index] = degrade.pseudo_video(image, LENGTH, SIZE, rng)
        degraded[index], qp[index] = degrade_sequence(targets[index], rng)
        index += 1
    order = rng.permutation(index)
    np.savez(args.out, targets=targets[order], degraded=degraded[order], qp=qp[order])
    print(f"{index} sequences -> {args.out}")


class QPRestorer(nn.Module):
    """`lite` (a WindowRestorer with a 1x1 first layer) plus the window's QP planes at 1/u resolution, added to
    the first layer's pre-activation (and with ``every_layer`` to each hidden layer's) by zero-initialised 1x1
    convs: it starts as the model it wraps."""

    def __init__(self, base: WindowRestorer, every_layer: bool = False) -> None:
        super().__init__()
        self.base = base
        window, width, depth = base.config.window, base.config.width, base.config.depth
        count = depth + 1 if every_layer else 1
        convs = [nn.Conv2d(window, width, 1, bias=False) for _ in range(count)]
        for conv in convs:
            nn.init.zeros_(conv.weight)
        self.qp_inputs = nn.ModuleList(convs)

    def forward(self, frames: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        model, factor = self.base, self.base.config.unshuffle
        start = 3 * model.config.reference_index
        reference = frames[:, start : start + 3]
        skip_weight = model.reference_skip.weight.reshape(-1, 3, factor, factor)
        skip = nn.functional.conv2d(reference, skip_weight, stride=factor)
        convs = [layer for layer in model.body if isinstance(layer, nn.Conv2d)]
        first = convs[0]
        hidden = nn.functional.conv2d(
            frames, first.weight.reshape(first.out_channels, -1, factor, factor), first.bias, stride=factor
        )
        for index, conv in enumerate(convs[1:]):
            if index < len(self.qp_inputs):
                hidden = hidden + self.qp_inputs[index](qp)
            hidden = conv(torch.relu(hidden))
        return torch.clamp(reference + model.shuffle(hidden + skip), 0.0, 1.0)


def saved_arch(saved: dict[str, Any]) -> ArchConfig | None:
    """The design a checkpoint `train` wrote records (one trained from scratch or resumed from one); None: `lite`."""
    return ArchConfig.from_dict(saved["arch"]) if "arch" in saved else None


def load_model(
    init: Path, weights: dict[str, Any] | None, every_layer: bool, arch: ArchConfig | None = None
) -> QPRestorer:
    """`lite` from ``init``, or with ``arch`` (a model trained from scratch) that architecture, untrained; then
    the weights of a checkpoint `train` wrote, if given."""
    if arch is None:
        base = build_model(preset("lite"))
        base.load_state_dict(torch.load(init, map_location="cpu", weights_only=False)["model"])
    else:
        base = build_model(arch)
    model = QPRestorer(base, every_layer)
    if weights is not None:  # a checkpoint `train` wrote
        model.load_state_dict(weights["model"])
    return model


def qp_planes(maps: np.ndarray, factor: int, height: int, width: int) -> torch.Tensor:
    """Macroblock maps [..., window, H/16, W/16] -> planes [..., window, height, width] at the trunk's 1/factor
    resolution, divided by QP_SCALE."""
    repeat = 16 // factor
    planes = np.repeat(np.repeat(maps, repeat, axis=-2), repeat, axis=-1)[..., :height, :width] / QP_SCALE
    return torch.from_numpy(np.ascontiguousarray(planes, np.float32))


def block_grid(height: int, width: int) -> tuple[int, int]:
    """Rows and columns of 16x16 blocks covering a frame (a partial last block counts, as macroblocks do)."""
    return (height + 15) // 16, (width + 15) // 16


def error_maps(clean: np.ndarray, degraded: np.ndarray) -> np.ndarray:
    """The oracle cue: RMS error of each 16x16 block [N, H/16, W/16] of a run [N, H, W, 3], in 8-bit levels."""
    count, height, width, _ = clean.shape
    rows, columns = block_grid(height, width)
    squared = (degraded.astype(np.float32) - clean.astype(np.float32)) ** 2
    squared = np.pad(squared.mean(axis=-1), ((0, 0), (0, 16 * rows - height), (0, 16 * columns - width)), "edge")
    return np.sqrt(squared.reshape(count, rows, 16, columns, 16).mean(axis=(2, 4)))


def estimate_maps(degraded: np.ndarray) -> np.ndarray:
    """The blind cue: each frame's noise level [N, H/16, W/16] (one value a frame), in 8-bit levels, from the
    median absolute diagonal 2x2 Haar coefficient (its standard deviation is sigma for i.i.d. noise)."""
    count, height, width, _ = degraded.shape
    pixels = degraded[:, : height // 2 * 2, : width // 2 * 2].astype(np.float32)
    diagonal = (pixels[:, ::2, ::2] - pixels[:, ::2, 1::2] - pixels[:, 1::2, ::2] + pixels[:, 1::2, 1::2]) / 2
    sigma = np.median(np.abs(diagonal).reshape(count, -1), axis=1) / 0.6745
    return np.broadcast_to(sigma[:, None, None], (count, *block_grid(height, width))).astype(np.float32)


def cue_maps(cue: str, clean: np.ndarray, degraded: np.ndarray, qp: np.ndarray) -> np.ndarray:
    """The planes of one cue for a run: the decoder's QP maps as given, the oracle error, or the estimate."""
    if cue == "error":
        return error_maps(clean, degraded)
    if cue == "estimate":
        return estimate_maps(degraded)
    return qp


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    with np.load(args.cache) as cache:
        targets, degraded, qp_maps = cache["targets"], cache["degraded"], cache["qp"]
    if args.coded_only:  # the codec specialist: sequences that went through x264 only, no noise-only windows
        coded = np.flatnonzero(qp_maps.reshape(len(qp_maps), -1).max(axis=1) > 0)
        targets, degraded, qp_maps = targets[coded], degraded[coded], qp_maps[coded]
    arch, resumed = None, None
    if args.resume is not None:  # go on from a checkpoint `train` wrote (its architecture and weights)
        resumed = torch.load(args.resume, map_location="cpu", weights_only=False)
        arch = saved_arch(resumed)
    elif args.from_scratch:  # an architecture to compare with `lite` from the same start: untrained
        arch = replace(preset("lite"), unshuffle=args.unshuffle, width=args.width)  # seeded above
    model = load_model(args.init, resumed, args.qp_layers == "all", arch)
    rng = np.random.default_rng(args.seed)
    cue = [p for name, p in model.named_parameters() if name.startswith("qp_inputs.")]
    trunk = [p for name, p in model.named_parameters() if not name.startswith("qp_inputs.")]
    optimizer = torch.optim.Adam(
        [{"params": trunk, "scale": 1.0}, {"params": cue, "scale": args.qp_lr_scale}], lr=args.lr
    )
    batch, crop, window, factor = args.batch, args.crop, model.base.config.window, model.base.config.unshuffle
    started, losses = time.perf_counter(), []
    for step in range(1, args.steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = group["scale"] * args.lr * 0.5 * (1 + np.cos(np.pi * step / args.steps)) * min(1.0, step / 200)
        inputs, labels, planes = [], [], []
        for _ in range(batch):
            sequence, first = int(rng.integers(0, len(targets))), int(rng.integers(0, LENGTH - window + 1))
            top, left = (16 * int(v) for v in rng.integers(0, (SIZE - crop) // 16 + 1, size=2))
            span = (sequence, slice(first, first + window), slice(top, top + crop), slice(left, left + crop))
            clean, noisy = targets[span], degraded[span]
            qp = qp_maps[
                sequence,
                first : first + window,
                top // 16 : (top + crop) // 16,
                left // 16 : (left + crop) // 16,
            ]
            if not args.coded_only and rng.random() < args.onfly_fraction:
                clean, noisy = synthesise_noise(clean, rng)
                qp = np.zeros_like(qp)
            for axis in (2, 1):  # the same flips of frames and QP maps
                if rng.random() < 0.5:
                    clean, noisy, qp = np.flip(clean, axis), np.flip(noisy, axis), np.flip(qp, axis)
            if rng.random() < 0.5:
                clean, noisy, qp = (
                    clean.transpose(0, 2, 1, 3),
                    noisy.transpose(0, 2, 1, 3),
                    qp.transpose(0, 2, 1),
                )
            if rng.random() < 0.5:
                clean, noisy, qp = clean[::-1], noisy[::-1], qp[::-1]
            inputs.append(noisy)
            labels.append(clean[window // 2])
            planes.append(cue_maps(args.cue, clean, noisy, qp))
        frames = torch.from_numpy(np.ascontiguousarray(np.stack(inputs))).permute(0, 1, 4, 2, 3)
        frames = frames.reshape(batch, window * 3, crop, crop).float() / 255
        label = torch.from_numpy(np.ascontiguousarray(np.stack(labels))).permute(0, 3, 1, 2).float() / 255
        qp_input = qp_planes(np.stack(planes), factor, crop // factor, crop // factor)
        if args.arm == "blind":
            qp_input = torch.zeros_like(qp_input)
        loss = nn.functional.l1_loss(model(frames, qp_input), label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 500 == 0 or step == args.steps:
            elapsed = time.perf_counter() - started
            print(
                json.dumps({"step": step, "loss": float(np.mean(losses[-500:])), "seconds": round(elapsed)})
            )
    saved = {"model": model.state_dict(), "arm": args.arm, "cue": args.cue, "qp_layers": args.qp_layers}
    if arch is not None:
        saved["arch"] = arch.to_dict()
    torch.save(saved, args.out)


@torch.no_grad()
def restore(model: QPRestorer, frames: np.ndarray, qp_maps: np.ndarray, use_qp: bool) -> np.ndarray:
    """Every frame of a clip through a centred window (edge frames replicated, as eval.py does)."""
    count, height, width, _ = frames.shape
    window, factor = model.base.config.window, model.base.config.unshuffle
    restored = np.empty_like(frames)
    for index in range(count):
        picks = [min(max(index + offset - window // 2, 0), count - 1) for offset in range(window)]
        batch = torch.from_numpy(frames[picks]).permute(0, 3, 1, 2).reshape(1, 3 * window, height, width)
        qp = qp_planes(qp_maps[picks][None], factor, height // factor, width // factor)
        output = model(batch.float() / 255, qp if use_qp else torch.zeros_like(qp))
        restored[index] = (output[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    return restored


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    models: dict[str, tuple[QPRestorer, str | None]] = {}  # a model and the cue it reads (None: zeros)
    for spec in args.model:
        name, _, path = spec.partition("=")
        saved = torch.load(path, map_location="cpu", weights_only=False) if path else None
        every = saved is not None and saved.get("qp_layers") == "all"
        cue = None if saved is None or saved.get("arm") == "blind" else str(saved.get("cue", "qp"))
        arch = saved_arch(saved) if saved is not None else None
        models[name] = (load_model(args.init, saved, every, arch).eval(), cue)
    clips = list_clips(args.clips)
    results: dict[str, Any] = {}
    for name in args.degradations:
        seed = degradation_seed(name, args.degradations, 0)
        gains: dict[str, list[float]] = {model: [] for model in models}
        for k, clip in enumerate(clips):
            clean = degrade.read_clip(clip, 0, args.frames, (640, 360))
            reference, degraded, qp_maps = degrade_clip_with_qp(name, clean, seed + k)
            base = psnr(degraded, reference)
            row = {"input": base}
            for model_name, (model, cue) in models.items():
                maps = cue_maps(cue or "qp", reference, degraded, qp_maps)
                row[model_name] = psnr(restore(model, degraded, maps, cue is not None), reference) - base
                gains[model_name].append(row[model_name])
            results[f"{name}/{clip.name}"] = row
            print(
                name, clip.name, json.dumps({key: round(value, 3) for key, value in row.items()}), flush=True
            )
        results[f"{name}/mean"] = {model: float(np.mean(values)) for model, values in gains.items()}
        print(
            name,
            "mean",
            json.dumps({key: round(v, 3) for key, v in results[f"{name}/mean"].items()}),
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return results


def plain(args: argparse.Namespace) -> None:
    """A blind-arm checkpoint's model alone, as tools/train.py writes one: train it on, export or quantise it."""
    saved = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    if saved.get("arm") != "blind":
        raise SystemExit(f"{args.checkpoint}: only a --arm blind checkpoint is the plain model (its cue planes are 0)")
    arch = replace(saved_arch(saved) or preset("lite"), name=args.name)
    weights = {key.removeprefix("base."): value for key, value in saved["model"].items() if key.startswith("base.")}
    build_model(arch).load_state_dict(weights)  # the weights fit the design they claim
    torch.save({"config": arch.to_dict(), "model": weights}, args.out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="build the cache of coded sequences with their QP maps")
    make.add_argument("--clips", type=Path, nargs="*", default=[], help="training videos or folders of them")
    make.add_argument("--stills", type=Path, nargs="*", default=[], help="folders of still photos")
    make.add_argument("--count", type=int, default=2400, help="sequences")
    make.add_argument(
        "--clip-downscale", type=float, default=2.0, help="decode clips at least this many times smaller (1: native)"
    )
    make.add_argument(
        "--clip-largest", type=frame_size, default=(640, 360), help="largest size (WxH) a clip is decoded at"
    )
    make.add_argument("--seed", type=int, default=5)
    make.add_argument("--out", type=Path, required=True, help="cache file (.npz)")
    fit = commands.add_parser("train", help="fine-tune lite with (or, --arm blind, without) a cue's planes")
    fit.add_argument("--cache", type=Path, required=True)
    fit.add_argument("--init", type=Path, required=True, help="lite checkpoint (tools.checkpoint_from_onnx)")
    fit.add_argument("--arm", choices=["cue", "blind"], required=True, help="blind: the cue's planes are zeros")
    fit.add_argument("--cue", choices=["qp", "error", "estimate"], default="qp", help="what the planes carry")
    fit.add_argument("--qp-layers", choices=["first", "all"], default="first")
    fit.add_argument("--qp-lr-scale", type=float, default=1.0, help="learning-rate factor of the cue's convs")
    fit.add_argument("--coded-only", action="store_true", help="train on the coded sequences only")
    fit.add_argument(
        "--from-scratch", action="store_true", help="train lite's design untrained, with --unshuffle and --width"
    )
    fit.add_argument("--resume", type=Path, help="a checkpoint this command wrote: train it on (new schedule)")
    fit.add_argument("--unshuffle", type=int, choices=[2, 4], default=4, help="space-to-depth factor (scratch)")
    fit.add_argument("--width", type=int, default=64, help="trunk channels (scratch)")
    fit.add_argument("--steps", type=int, default=4000)
    fit.add_argument("--batch", type=int, default=8)
    fit.add_argument("--crop", type=int, default=96, help="a multiple of 16 up to 128")
    fit.add_argument("--lr", type=float, default=1e-4)
    fit.add_argument("--onfly-fraction", type=float, default=0.15, help="share of noise-only windows (QP 0)")
    fit.add_argument("--seed", type=int, default=11)
    fit.add_argument("--threads", type=int, default=2)
    fit.add_argument("--out", type=Path, required=True, help="weights file (.pt)")
    test = commands.add_parser("eval", help="PSNR gain on val clips, with the decoder's QP maps")
    test.add_argument("--init", type=Path, required=True, help="the lite checkpoint the models grew from")
    test.add_argument(
        "--model", action="append", required=True, help="NAME=weights.pt, or NAME= for the init"
    )
    test.add_argument("--clips", type=Path, nargs="+", required=True)
    test.add_argument("--degradations", nargs="+", default=["crf37", "noise_crf30", "sigma15", "sigma25"])
    test.add_argument("--frames", type=int, default=24)
    test.add_argument("--threads", type=int, default=2)
    test.add_argument("--out", type=Path, help="results (.json)")
    bare = commands.add_parser("plain", help="a blind-arm checkpoint as a tools/train.py checkpoint")
    bare.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint `train --arm blind` wrote")
    bare.add_argument("--name", required=True, help="the model's name (exported as streamer.name)")
    bare.add_argument("--out", type=Path, required=True, help="checkpoint (.pt) for tools/train.py --init")
    args = parser.parse_args(argv)
    if args.command == "train" and (args.crop % 16 or not 16 <= args.crop <= SIZE):
        parser.error("--crop must be a multiple of 16 between 16 and 128")
    if args.command == "train" and args.from_scratch and args.arm != "blind":
        parser.error("--from-scratch compares architectures: use it with --arm blind")
    if args.command == "train" and args.from_scratch and args.resume is not None:
        parser.error(
            "--resume trains the checkpoint's own design on: --from-scratch (--unshuffle, --width) would be ignored"
        )
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    {"build": build, "train": train, "eval": evaluate, "plain": plain}[args.command](args)


if __name__ == "__main__":
    main()
