"""Average the weights of fine-tunes that share a starting point (a "model soup", Wortsman et al. 2022).

Two runs fine-tuned from the same checkpoint on different data mixes stay in one basin of the loss, so their
weighted mean is a model too, and often better than either (measured for ``lite-recurrent``, model card).
The result holds the mean weights, the mean of the QAT activation ranges when every input has them (so
``tools/quantize.py --ranges-from`` and ``--init`` read it as they read a training checkpoint) and the first
input's config; it has no optimiser state, so it starts a run with ``--init`` rather than resuming one.

    python -m tools.average_checkpoints --checkpoint runs/a/last.pt runs/b/last.pt --out runs/soup.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from tools.qat import save_checkpoint


def average_checkpoints(states: list[dict[str, Any]], weights: list[float]) -> dict[str, Any]:
    """The weighted mean of ``states`` (each a checkpoint dict with ``model`` and ``config``)."""
    if len(states) < 2 or len(weights) != len(states) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError("need two or more checkpoints and one non-negative weight each, not all zero")
    first = states[0]
    for index, state in enumerate(states[1:], start=1):
        if state["config"] != first["config"]:
            raise ValueError(
                f"checkpoint {index} has another architecture than checkpoint 0: {state['config']}"
            )
        if set(state["model"]) != set(first["model"]):
            raise ValueError(
                f"checkpoint {index} holds other tensors: {sorted(set(state['model']) ^ set(first['model']))}"
            )
    shares = [weight / sum(weights) for weight in weights]
    model = {
        key: sum(
            share * state["model"][key].double() for share, state in zip(shares, states, strict=True)
        ).to(tensor.dtype)
        for key, tensor in first["model"].items()
    }
    ranges = None
    if all(state.get("qat_ranges") for state in states):
        if len({len(state["qat_ranges"]) for state in states}) != 1:
            raise ValueError("the checkpoints' QAT ranges cover different layers")
        ranges = [
            {
                bound: sum(
                    share * state["qat_ranges"][layer][bound]
                    for share, state in zip(shares, states, strict=True)
                )
                for bound in first["qat_ranges"][layer]
            }
            for layer in range(len(first["qat_ranges"]))
        ]
    averaged: dict[str, Any] = {"model": model, "qat_ranges": ranges, "config": first["config"]}
    if "widths" in first:
        averaged["widths"] = first["widths"]
    return averaged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, nargs="+", required=True, help="checkpoints to average")
    parser.add_argument("--weights", type=float, nargs="+", help="relative weight of each (default: equal)")
    parser.add_argument("--out", type=Path, required=True, help="averaged checkpoint to write")
    args = parser.parse_args(argv)
    weights = args.weights or [1.0] * len(args.checkpoint)
    states = [torch.load(path, map_location="cpu", weights_only=False) for path in args.checkpoint]
    try:
        averaged = average_checkpoints(states, weights)
    except ValueError as error:
        parser.error(str(error))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(averaged, args.out)
    print(f"{args.out}: mean of {len(states)} checkpoints, weights {weights}")


if __name__ == "__main__":
    main()
