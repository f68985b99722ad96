"""Export a trained (or freshly initialised) restorer to ONNX with the streamer metadata contract.

Input "frames" float32 [B, N*3, H, W] (N RGB frames, oldest first, [0, 1]); recurrent models (metadata ``streamer.recurrent=1``)
also take "state" float32 [B, 3, H, W] and give "next_state" (the same shape: what the next frame's call takes);
output "restored" float32 [B, 3, H*scale, W*scale] in [0, 1]. Dynamic batch/H/W, opset 17 (TensorRT 10 compatible). The ONNX Runtime output
is checked against PyTorch before the file is written. Example:

    python -m tools.export_onnx --checkpoint /scratch/run1/best.pt --out engines/models/lite.onnx
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from engines.arch import ArchConfig, WindowRestorer, build_model, count_macs, count_parameters, preset
from tools.arguments import frame_size


def load_model(checkpoint: Path | None, preset_name: str = "lite", causal: bool = False) -> WindowRestorer:
    """Load weights (and architecture, including pruned widths) from a checkpoint, or build a fresh model."""
    if checkpoint is None:
        return build_model(preset(preset_name, causal=causal)).eval()
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = build_model(ArchConfig.from_dict(state["config"]), state.get("widths"))
    model.load_state_dict(state["model"])
    return model.eval()


def metadata_for(model: WindowRestorer, name: str | None = None) -> dict[str, str]:
    config = model.config
    causal = config.reference_index == config.window - 1 and config.window > 1
    default_name = f"{config.name}-causal" if causal else config.name
    recurrent = {"streamer.recurrent": "1"} if config.recurrent else {}
    return {
        **recurrent,
        "streamer.window": str(config.window),
        "streamer.reference_index": str(config.reference_index),
        "streamer.scale": str(config.scale),
        "streamer.pad_multiple": str(config.pad_multiple()),
        "streamer.colorspace": "rgb",
        "streamer.range": "0-1",
        "streamer.name": name or default_name,
    }


def textured_frames(window: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random texture plus noise, shaped [1, window*3, H, W] in [0, 1], to compare runtimes on."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 6 * np.pi, height)[:, None]
    cols = np.linspace(0, 9 * np.pi, width)[None, :]
    base = 0.5 + 0.25 * np.sin(rows + rng.uniform(0, 3)) * np.cos(cols * rng.uniform(0.5, 1.5))
    frames = base[None, None] + rng.normal(0, 0.1, size=(1, window * 3, height, width))
    return np.clip(frames, 0, 1).astype(np.float32)


def model_inputs(model: WindowRestorer, frames: np.ndarray, seed: int = 1) -> dict[str, np.ndarray]:
    """The ONNX inputs for ``frames``: a recurrent model also gets a ``state`` (a textured frame)."""
    inputs = {"frames": frames}
    if model.config.recurrent:
        batch, _channels, height, width = frames.shape
        inputs["state"] = np.concatenate([textured_frames(1, height, width, seed + i) for i in range(batch)])
    return inputs


class RecurrentStep(torch.nn.Module):
    """A recurrent model's ``step`` as the graph: (frames, state) -> (restored, next_state)."""

    def __init__(self, model: WindowRestorer) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.step(frames, state)


def unwrap_names(proto: onnx.ModelProto, prefix: str) -> None:
    """Drop the wrapper's ``prefix`` from weight names, so a recurrent model's weights are named as a window
    model's (``body.N.weight``: what tools/quantize.py looks for)."""
    renamed = {init.name: init.name[len(prefix) :] for init in proto.graph.initializer if init.name.startswith(prefix)}
    for initializer in proto.graph.initializer:
        initializer.name = renamed.get(initializer.name, initializer.name)
    for node in proto.graph.node:
        for index, name in enumerate(node.input):
            if name in renamed:
                node.input[index] = renamed[name]


def to_onnx_bytes(model: WindowRestorer, opset: int = 17, name: str | None = None) -> bytes:
    window = model.config.window
    inputs = model_inputs(model, textured_frames(window, 64, 96))
    outputs = ["restored", "next_state"] if model.config.recurrent else ["restored"]
    graph: torch.nn.Module = RecurrentStep(model) if model.config.recurrent else model
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        torch.onnx.export(
            graph,
            tuple(torch.from_numpy(value) for value in inputs.values()),
            str(path),
            input_names=list(inputs),
            output_names=outputs,
            opset_version=opset,
            dynamic_axes={key: dynamic for key in [*inputs, *outputs]},
            do_constant_folding=True,
            dynamo=False,
        )
        proto = onnx.load(str(path))
    if model.config.recurrent:
        unwrap_names(proto, "model.")
    onnx.checker.check_model(proto)
    for key, value in metadata_for(model, name).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "streamer.tools.export_onnx"
    return proto.SerializeToString()


def max_difference(
    model: WindowRestorer, onnx_bytes: bytes, height: int, width: int, batch: int = 1
) -> float:
    """Largest absolute difference between ONNX Runtime (CPU) and PyTorch on a textured input."""
    frames = np.concatenate(
        [textured_frames(model.config.window, height, width, seed) for seed in range(batch)]
    )
    inputs = model_inputs(model, frames)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    runtime = session.run(None, inputs)  # restored (and a recurrent model's next_state)
    with torch.no_grad():
        expected = model.step(*(torch.from_numpy(value) for value in inputs.values()))
    return max(float(np.max(np.abs(got - want.numpy()))) for got, want in zip(runtime, expected, strict=False))


def benchmark_ms(
    onnx_model: bytes | str, window: int, height: int, width: int, threads: int = 2, repeats: int = 20
) -> float:
    """Median ONNX Runtime CPU milliseconds for one frame of ``height`` x ``width`` (batch 1); the model is
    ONNX bytes or a file path."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
    inputs = {"frames": textured_frames(window, height, width)}
    if "state" in [item.name for item in session.get_inputs()]:
        inputs["state"] = textured_frames(1, height, width, 1)
    for _ in range(3):
        session.run(None, inputs)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, inputs)
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1e3)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="training checkpoint (.pt); omit for an untrained model"
    )
    parser.add_argument("--preset", default="lite", help="architecture when no checkpoint is given")
    parser.add_argument("--causal", action="store_true", help="untrained model restores the newest frame")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument(
        "--name", help="streamer.name in the metadata (default: the preset, plus -causal for causal models)"
    )
    parser.add_argument("--check-size", type=int, nargs=2, default=[72, 128], metavar=("H", "W"))
    parser.add_argument("--benchmark", nargs="*", type=frame_size, default=[], metavar="WxH", help="time ORT at these sizes")
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads for --benchmark")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |ORT - torch| allowed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    model = load_model(args.checkpoint, args.preset, args.causal)
    onnx_bytes = to_onnx_bytes(model, args.opset, args.name)
    multiple = model.config.pad_multiple()  # sizes the model takes (the engine pads frames up to them)

    def fit(size: int) -> int:
        return -(-size // multiple) * multiple

    height, width = args.check_size
    difference = max(
        max_difference(model, onnx_bytes, fit(height), fit(width)),
        max_difference(model, onnx_bytes, fit(36), fit(52), 2),
    )
    if difference > args.tolerance:
        raise SystemExit(f"ONNX Runtime differs from PyTorch by {difference:.2e} (> {args.tolerance:.0e})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(onnx_bytes)
    print(
        f"wrote {args.out} ({len(onnx_bytes) / 1e6:.2f} MB) params={count_parameters(model)} "
        f"GMAC@360p={count_macs(model, 360, 640) / 1e9:.2f} GMAC@720p={count_macs(model, 720, 1280) / 1e9:.2f} "
        f"GMAC@1080p={count_macs(model, 1080, 1920) / 1e9:.2f} max|ort-torch|={difference:.1e}"
    )
    for width, height in args.benchmark:
        milliseconds = benchmark_ms(onnx_bytes, model.config.window, height, width, args.threads)
        print(f"ORT CPU {args.threads} threads {width}x{height}: {milliseconds:.1f} ms/frame")


if __name__ == "__main__":
    main()
