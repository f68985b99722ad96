"""Rebuild a training checkpoint from an exported float model, to fine-tune a model whose .pt is gone.

The exported graph's initialisers are the torch module's parameters: most keep their names, the layers that
export_onnx folds into another form (the 1x1 fusion conv after PixelUnshuffle, exported as a 4x4 stride-4
conv) keep their values under a generated name and another shape. Every unmatched parameter is taken from
the one unused initialiser with the same number of elements (reshaped); the rebuilt model must reproduce the
ONNX model's output on a random window, or nothing is written. A recurrent model (metadata
``streamer.recurrent``) is rebuilt as one, its gate and state fusion included, and checked on a window and a
state; ``--recurrent 2`` names one that feeds back its restored frame, ``--gate-context`` one whose gate sees the
frame-wide cue (the metadata does not tell them apart).

    python -m tools.checkpoint_from_onnx --model engines/models/lite.onnx --preset lite --out /scratch/lite_v7.pt
    python -m tools.checkpoint_from_onnx --model engines/models/lite-recurrent-wide.onnx --preset lite \
        --width 96 --out /scratch/wide.pt
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np


def rebuild(
    model_path: Path,
    preset_name: str,
    causal: bool,
    width: int | None = None,
    recurrent: int | None = None,
    gate_context: bool = False,
) -> tuple[Any, float]:
    """(torch model with the ONNX model's weights, max |difference| of their outputs on a random window, and a
    random state for a recurrent model); ``recurrent`` None reads it from the model's metadata."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import numpy_helper

    from engines.arch import build_model, preset

    proto = onnx.load(str(model_path))
    graph = proto.graph
    weights = {item.name: torch.from_numpy(numpy_helper.to_array(item).copy()) for item in graph.initializer}
    if recurrent is None:
        metadata = {entry.key: entry.value for entry in proto.metadata_props}
        recurrent = int(metadata.get("streamer.recurrent", "0"))
    config = dataclasses.replace(
        preset(preset_name, causal=causal),
        recurrent=recurrent,
        gate_context=int(gate_context and recurrent > 0),
    )
    names = [item.name for item in graph.input if item.name not in weights]
    if (len(names) > 1) != bool(recurrent):
        raise ValueError(f"the model's inputs {names} do not match recurrent={recurrent}")
    model = build_model(dataclasses.replace(config, width=width) if width else config)
    state = model.state_dict()
    unused = {name: tensor for name, tensor in weights.items() if name not in state and tensor.dim() > 0}
    for key, value in state.items():
        if key in weights and weights[key].shape == value.shape:
            state[key] = weights[key]
            continue
        matches = [name for name, tensor in unused.items() if tensor.numel() == value.numel()]
        if len(matches) != 1:
            raise ValueError(
                f"{key}: {len(matches)} initialisers of {value.numel()} elements, need exactly one"
            )
        state[key] = unused.pop(matches[0]).reshape(value.shape)
    model.load_state_dict(state)
    rng = np.random.default_rng(0)
    window = rng.random((1, 3 * model.config.window, 72, 128), dtype=np.float32)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    inputs = {names[0]: window}
    running_estimate = None
    if model.config.recurrent:
        state_array = rng.random((1, 3, 72, 128), dtype=np.float32)
        inputs[names[1]] = state_array
        running_estimate = torch.from_numpy(state_array)
    expected = session.run(None, inputs)
    with torch.no_grad():
        got = model.eval().step(torch.from_numpy(window), running_estimate)
    differences = [np.abs(want - have.numpy()).max() for want, have in zip(expected, got, strict=False)]
    return model, float(max(differences))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, required=True, help="float ONNX model from tools/export_onnx.py"
    )
    parser.add_argument("--preset", required=True, help="the preset it was trained as (lite, detail, ...)")
    parser.add_argument("--causal", action="store_true", help="a causal model (reference = newest frame)")
    parser.add_argument("--width", type=int, help="hidden channels, when not the preset's (lite-fast: 48)")
    parser.add_argument(
        "--recurrent",
        type=int,
        choices=(0, 1, 2),
        help="0 window model, 1 running estimate, 2 restored frame fed back (default: the metadata's, as 1)",
    )
    parser.add_argument(
        "--gate-context", action="store_true", help="a recurrent gate with the frame-wide cue"
    )
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pt)")
    args = parser.parse_args(argv)
    import torch

    model, difference = rebuild(
        args.model, args.preset, args.causal, args.width, args.recurrent, args.gate_context
    )
    print(f"max |onnx - torch| = {difference:.2e}")
    if difference > 1e-4:
        print("the rebuilt model does not reproduce the ONNX model: not written")
        return 1
    config = model.config
    state = model.state_dict()
    torch.save(
        {"model": state, "config": config.to_dict(), "step": 0, "note": f"from {args.model.name}"}, args.out
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
