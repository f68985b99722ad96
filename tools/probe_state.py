"""What a recurrent model's state does on one clip, frame by frame.

For each restored frame of a clip under i.i.d. Gaussian noise: the PSNR of the noisy reference frame, of the
estimate the gate makes (``next_state``, the running estimate of the reference frame) and of the restored
output, over all pixels and over the clip's static pixels (those that change by less than ``--static-levels``
over the whole run); and the gate's mean weight on the previous state. These probes tell whether the gate or
the trunk limits what the state adds:

* ``--keep K`` rescales the gate towards the state, g' = 1 - K (1 - g) (K < 1: a longer memory);
* ``--scale S`` rescales it towards the new frame, g' = S g (S < 1: a shorter memory);
* ``--oracle`` feeds the clean reference frame as the previous state (the best state there can be).

``--write-onnx PATH`` writes the model with its gate so rescaled (and nothing else changed) for ``tools.eval``,
instead of probing: the model card's gate-scaling rows came from it.

The model is run by ONNX Runtime as it is (float or int8); its gate is the first ``Sigmoid`` node under
``/gate/`` (``engines.arch.RecurrentGate``). Example (model card, version 11):

    python -m tools.probe_state --model lite-recurrent-wide --clip ../shared/media/val/oxford_towncentre_pedestrians_480p.mp4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from engines import EngineError, resolve_model
from engines.onnx_cpu import read_model_info
from engines.processing import pack_window
from tools import degrade
from tools.arguments import frame_size


def psnr(image: np.ndarray, target: np.ndarray) -> float:
    """PSNR of uint8 pixels (any shape: a frame, or the pixels a mask picked)."""
    error = float(np.mean(np.square(image.astype(np.float64) - target.astype(np.float64))))
    return float(10 * np.log10(255.0**2 / max(error, 1e-10)))


def gate_output(model: Any) -> str:
    """The name of the recurrent gate's sigmoid output in ``model`` (an ``onnx.ModelProto``)."""
    for node in model.graph.node:
        if node.op_type == "Sigmoid" and node.name.startswith("/gate/"):
            return str(node.output[0])
    raise EngineError("the model has no recurrent gate (a /gate/ Sigmoid node): not a recurrent model")


def rescaled_gate(model: Any, keep: float = 1.0, scale: float = 1.0) -> str:
    """Rewire ``model``'s gate (in place) to g' = S (1 - K (1 - g)): ``keep`` K < 1 lengthens the state's memory,
    ``scale`` S < 1 shortens it. Returns the name of the gate every reader now takes."""
    gate = gate_output(model)
    if keep == 1.0 and scale == 1.0:
        return gate
    kept = f"{gate}_kept"
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name == gate:
                node.input[index] = kept
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array(scale * keep, np.float32), "probe_keep"),
        numpy_helper.from_array(np.array(scale * (1.0 - keep), np.float32), "probe_floor"),
    ])
    position = 1 + next(index for index, node in enumerate(model.graph.node) if gate in node.output)
    model.graph.node.insert(position, helper.make_node("Mul", [gate, "probe_keep"], [f"{gate}_scaled"]))
    model.graph.node.insert(position + 1, helper.make_node("Add", [f"{gate}_scaled", "probe_floor"], [kept]))
    return kept


def probed_model(model: Any, keep: float = 1.0, scale: float = 1.0) -> Any:
    """``model`` with its gate rescaled (``rescaled_gate``) and as an extra output."""
    gate = rescaled_gate(model, keep, scale)
    model.graph.output.append(helper.make_tensor_value_info(gate, onnx.TensorProto.FLOAT, None))
    return model


def probe(
    model_path: Path, clean: np.ndarray, sigma: float, keep: float = 1.0, oracle: bool = False, seed: int = 0,
    static_levels: float = 6.0, threads: int = 2, scale: float = 1.0,
) -> list[dict[str, float]]:
    """One row per restored frame of ``clean`` [T, H, W, 3] uint8 under noise ``sigma`` (0-255)."""
    info = read_model_info(model_path)
    window, reference, multiple = info.window, info.reference_index, info.pad_multiple
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    model = probed_model(onnx.load(str(model_path)), keep, scale)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    gate = session.get_outputs()[-1].name
    noisy = degrade.add_gaussian_noise(clean, sigma, np.random.default_rng(seed))
    height, width = clean.shape[1:3]
    static = np.abs(np.diff(clean.astype(np.int16), axis=0)).max(axis=(0, 3)) < static_levels
    rows: list[dict[str, float]] = []
    state = None
    for start in range(len(clean) - window + 1):
        packed = pack_window([noisy[start + k] for k in range(window)], multiple)
        target = clean[start + reference]
        if oracle:
            state = pack_window([target], multiple)
        feed = packed[:, 3 * reference : 3 * reference + 3] if state is None else state
        restored, next_state, weights = session.run(["restored", "next_state", gate], {"frames": packed, "state": feed})
        estimate, output = (degrade.to_uint8(t[0, :, :height, :width].transpose(1, 2, 0)) for t in (next_state, restored))
        rows.append({
            "frame": start + reference,
            "noisy_db": psnr(noisy[start + reference], target),
            "estimate_db": psnr(estimate, target),
            "estimate_static_db": psnr(estimate[static], target[static]),
            "output_db": psnr(output, target),
            "output_static_db": psnr(output[static], target[static]),
            "gate_mean": float(weights.mean()),
        })
        state = next_state
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="shipped recurrent model's name (its float file) or an ONNX file")
    parser.add_argument("--clip", type=Path, help="video file or image-sequence folder (required to probe)")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=frame_size, default="640x360", help="WxH the clip is resized to")
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--keep", type=float, default=1.0, help="g' = 1 - K (1 - g): K < 1 keeps more of the state")
    parser.add_argument("--scale", type=float, default=1.0, help="g' = S g: S < 1 keeps less of the state")
    parser.add_argument("--oracle", action="store_true", help="feed the clean reference frame as the previous state")
    parser.add_argument("--write-onnx", type=Path, help="write the model with its gate rescaled here, and stop")
    parser.add_argument("--static-levels", type=float, default=6.0, help="static pixels change by less than this")
    parser.add_argument("--every", type=int, default=10, help="print every N-th frame (the first five always)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args(argv)
    if not 0.0 < args.keep <= 1.0:
        parser.error("--keep must be in (0, 1]")
    if not 0.0 < args.scale <= 1.0:
        parser.error("--scale must be in (0, 1]")
    path = Path(args.model) if Path(args.model).suffix == ".onnx" else resolve_model(args.model)
    if args.write_onnx:
        model = onnx.load(str(path))
        rescaled_gate(model, args.keep, args.scale)
        onnx.save(model, str(args.write_onnx))
        print(f"wrote {args.write_onnx}: gate' = {args.scale:g} (1 - {args.keep:g} (1 - gate))")
        return 0
    if args.clip is None:
        parser.error("--clip is required to probe (or --write-onnx)")
    width, height = args.size
    clean = degrade.read_clip(args.clip, 0, args.frames, (width, height))
    rows = probe(
        path, clean, args.sigma, args.keep, args.oracle, static_levels=args.static_levels, threads=args.threads,
        scale=args.scale,
    )
    for index, row in enumerate(rows):
        if index < 5 or index % args.every == 0 or index == len(rows) - 1:
            print(" ".join(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}" for key, value in row.items()))
    tail = rows[len(rows) // 2 :]
    summary = {key: float(np.mean([row[key] for row in tail])) for key in rows[0] if key != "frame"}
    print("second half mean:", json.dumps({key: round(value, 3) for key, value in summary.items()}))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "second_half_mean": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
