"""Structured channel pruning (L1 norm of conv filters) of a trained restorer plus a short fine-tune.

Every hidden layer keeps its ``(1 - ratio)`` share of output filters with the largest L1 norm (rounded to a
multiple of 8 for fast CPU kernels); the next layer loses the matching input channels. Reports parameters,
MACs at 640x360, ONNX Runtime ms/frame and validation PSNR before pruning, after pruning, and after fine-tuning.

    python -m tools.prune --checkpoint /scratch/run1/best.pt --cache /scratch/cache.npz --out /scratch/pruned.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from engines.arch import WindowRestorer, build_model, count_macs, count_parameters
from tools import export_onnx, train


def prune_model(model: WindowRestorer, ratio: float, multiple: int = 8) -> WindowRestorer:
    """Return a narrower copy of ``model`` keeping the highest-L1 filters of every hidden conv."""
    convs = [module for module in model.body if isinstance(module, nn.Conv2d)]
    keep: list[torch.Tensor] = []
    for conv in convs[:-1]:
        count = max(multiple, round(conv.out_channels * (1 - ratio) / multiple) * multiple)
        norms = conv.weight.detach().abs().sum(dim=(1, 2, 3))
        keep.append(torch.sort(torch.topk(norms, min(count, conv.out_channels)).indices).values)
    pruned = build_model(model.config, [len(indices) for indices in keep])
    new_convs = [module for module in pruned.body if isinstance(module, nn.Conv2d)]
    with torch.no_grad():
        for index, (old, new) in enumerate(zip(convs, new_convs, strict=True)):
            weight = old.weight
            bias = old.bias
            assert bias is not None and new.bias is not None
            if index < len(keep):
                weight, bias = weight[keep[index]], bias[keep[index]]
            if index > 0:
                weight = weight[:, keep[index - 1]]
            new.weight.copy_(weight)
            new.bias.copy_(bias)
    return pruned


def ms_at_360p(model: WindowRestorer, threads: int) -> float:
    return export_onnx.benchmark_ms(export_onnx.to_onnx_bytes(model), model.config.window, 360, 640, threads)


def describe(label: str, model: WindowRestorer, scores: dict[str, float], threads: int) -> str:
    return (
        f"| {label} | {model.hidden_widths} | {count_parameters(model)} | {count_macs(model, 360, 640) / 1e9:.2f} | "
        f"{ms_at_360p(model.eval(), threads):.1f} | {scores['sigma25']:.2f} | {scores['mixed']:.2f} |"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True, help="cache built by tools/train.py")
    parser.add_argument("--out", type=Path, required=True, help="pruned checkpoint (.pt), exportable")
    parser.add_argument("--ratio", type=float, default=0.25, help="share of hidden filters to remove")
    parser.add_argument("--steps", type=int, default=1000, help="fine-tuning steps")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--val-sequences", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for fine-tuning")
    parser.add_argument("--ort-threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    original = export_onnx.load_model(args.checkpoint)
    with np.load(args.cache) as stored:
        targets, degraded = stored["targets"], stored["degraded"]
    val_count = min(args.val_sequences, len(targets) // 4)
    val_sets = train.make_validation(targets[:val_count], degraded[:val_count], original.config, args.seed)
    rows = [
        "| model | hidden widths | params | GMAC@360p | ORT ms@360p | val σ25 dB | val mixed dB |",
        "|---|---|---|---|---|---|---|",
    ]
    rows.append(describe("trained", original, train.validate(original, val_sets, "cpu"), args.ort_threads))
    pruned = prune_model(original, args.ratio)
    rows.append(describe("pruned", pruned, train.validate(pruned, val_sets, "cpu"), args.ort_threads))
    optimizer = torch.optim.Adam(pruned.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    pruned.train()
    for _ in tqdm(range(args.steps), desc="fine-tune"):
        noisy, clean = train.sample_batch(
            targets[val_count:], degraded[val_count:], pruned.config, args.batch, args.crop, 0.35, rng
        )
        loss = nn.functional.l1_loss(pruned(noisy), clean)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    scores = train.validate(pruned, val_sets, "cpu")
    rows.append(describe(f"pruned + {args.steps} fine-tune steps", pruned, scores, args.ort_threads))
    torch.save(
        {
            "config": pruned.config.to_dict(),
            "widths": pruned.hidden_widths,
            "model": pruned.state_dict(),
            "val": scores,
            "source": str(args.checkpoint),
        },
        args.out,
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
