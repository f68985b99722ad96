"""Post-training int8 quantisation of an exported model for the CPU engine (ONNX Runtime QDQ, VNNI-friendly).

Calibrates activation ranges on real degraded windows (the training share of each clip: noise, H.264 at
CRF 37, low light), quantises the convolutions of the body (weights per channel int8, activations uint8) and
keeps the reference path, the residual additions and the clamp in float so the output keeps its precision. The
streamer.* metadata is copied and ``streamer.precision=int8`` added; the CPU engine picks ``NAME.int8.onnx``
up automatically when it lies next to ``NAME.onnx``. TensorRT keeps building from the float model.

    python -m tools.quantize --model engines/models/lite.onnx --clips /data/clips
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from engines.arch_context import CONV_ORDER
from engines.base import INPUT_NAME, NEXT_STATE_NAME, OUTPUT_NAME, STATE_NAME, ModelInfo
from engines.onnx_cpu import read_model_info
from engines.processing import pack_window, reference_planes
from tools import degrade, export_onnx
from tools.arguments import frame_size
from tools.eval import psnr
from tools.qat import residual_range_argument
from tools.training_cache import list_clips

# the residual tail, and a recurrent model's gated blend with its state (Sigmoid, Sub, Mul)
FLOAT_TAIL_OPS = ("Add", "DepthToSpace", "Clip", "Slice", "Concat", "Sigmoid", "Sub", "Mul")
GATE_WEIGHT_PREFIX = "gate."  # a recurrent model's gate convolutions (tools/export_onnx keeps their names)


def calibration_windows(
    clips: list[Path], count: int, info: ModelInfo, size: tuple[int, int], seed: int = 0
) -> list[np.ndarray]:
    """``count`` packed model inputs: windows from the training share of the clips, each degraded."""
    rng = np.random.default_rng(seed)
    window = info.window
    windows: list[np.ndarray] = []
    kinds = ("sigma", "crf37", "lowlight", "noise+crf")
    train_bounds = {path: degrade.split_bounds(degrade.count_frames(path))[0] for path in clips[:count]}
    for index in range(count):
        path = clips[index % len(clips)]
        train_start, train_stop = train_bounds[path]
        first = int(rng.integers(train_start, max(train_start + 1, train_stop - window)))
        clean = degrade.read_clip(path, first, first + window, size)
        kind = kinds[index % len(kinds)]
        if kind == "sigma":
            frames = degrade.add_gaussian_noise(clean, float(rng.uniform(5, 40)), rng)
        elif kind == "crf37":
            frames = degrade.x264_roundtrip(clean, 37, bframes=0)
        elif kind == "lowlight":
            dark = degrade.darken(clean, float(rng.uniform(0.2, 0.5)), 1.3)
            frames = degrade.x264_roundtrip(degrade.add_poisson_gaussian_noise(dark, 0.008, 5.0, rng), 30)
        else:
            noisy = degrade.add_gaussian_noise(clean, float(rng.uniform(3, 15)), rng)
            frames = degrade.x264_roundtrip(noisy, int(rng.integers(26, 36)), bframes=0)
        windows.append(pack_window(list(frames), info.pad_multiple))
    return windows


def feeds(window: np.ndarray, info: ModelInfo) -> dict[str, np.ndarray]:
    """A packed window as the model's inputs: a recurrent model's state is its reference frame, which is what
    the engine feeds at a stream's first frame (the steady state is a restored frame, in the same range)."""
    if not info.recurrent:
        return {INPUT_NAME: window}
    return {INPUT_NAME: window, STATE_NAME: np.ascontiguousarray(reference_planes(window, info.reference_index))}


def float_tail_nodes(model_path: Path, output_conv: bool = False) -> list[str]:
    """Nodes kept in float: the residual tail (additions, depth-to-space, clamp) and the reference path (the
    convolution reading the reference frame straight from the input, or a recurrent model's gated estimate),
    whose error would reach the output undamped; a recurrent model's gate (its blend decides what the state
    keeps); with ``output_conv`` also the body's last convolution (the one feeding the residual addition).
    The rest of the body, the bulk of the work, runs in int8."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    producers = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    keep: list[str] = []
    for node in graph.node:
        if node.op_type in FLOAT_TAIL_OPS:
            keep.append(node.name)
        elif (
            node.op_type == "Conv"
            and node.input[0] in producers
            and producers[node.input[0]].op_type == "Slice"
        ):
            keep.append(node.name)
        elif node.op_type == "Conv" and node.input[0] in (STATE_NAME, NEXT_STATE_NAME):
            # a recurrent model's reference path reads the gated estimate (the next state), not a Slice
            keep.append(node.name)
        elif node.op_type == "Conv" and node.input[1].startswith(GATE_WEIGHT_PREFIX):
            keep.append(node.name)
        elif output_conv and node.op_type == "Conv" and "Add" in consumers.get(node.output[0], []):
            keep.append(node.name)
    return sorted(set(keep))


def activation_tensors(model_path: Path) -> list[str]:
    """Names of the activations ``tools/qat.py`` rounds, in its order: the input of every body convolution after
    the first, then the output of the last one (the residual), then (a model with a detail path) the inlet's
    input and (ReLU) output, the input of every other detail convolution and the output of its last one. Body convolutions are the ones whose weight is an
    initializer named ``body.N.weight`` (with a 1x1 fusion layer the first one's weight is reshaped at export and
    loses its name; with a wider one it keeps it and is skipped here). A context path's come last: the input of
    each of its convolutions in the order they run, then the outputs of its decoder's first one (``up``), of the
    trunk's middle convolution (which the path's output joins) and of its last one (``tools.qat.context_outputs``)."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    body = sorted(
        (int(node.input[1].split(".")[1]), node)
        for node in graph.node
        if node.op_type == "Conv" and node.input[1].startswith("body.") and node.input[1].endswith(".weight")
    )
    body = [(index, node) for index, node in body if index > 0]  # the first reads the frames (exact in uint8)
    if not body:
        raise ValueError(f"{model_path}: no body convolutions named body.N.weight")
    names = [node.input[0] for _, node in body] + [body[-1][1].output[0]]
    detail = sorted(
        (-1 if node.input[1] == "detail.inlet.weight" else int(node.input[1].split(".")[2]), node)
        for node in graph.node
        if node.op_type == "Conv" and node.input[1].startswith("detail.") and node.input[1].endswith(".weight")
    )
    if detail:
        inlet = detail[0][1]
        inlet_relu = next(node for node in graph.node if node.op_type == "Relu" and node.input[0] == inlet.output[0])
        inputs = [node.input[0] for _, node in detail]
        names += [inputs[0], inlet_relu.output[0], *inputs[1:], detail[-1][1].output[0]]
    convs = {node.input[1]: node for node in graph.node if node.op_type == "Conv"}
    context = context_convs(convs)
    if context:
        up, out = convs["context.up.weight"], context[-1]
        names += [node.input[0] for node in context] + [up.output[0]]
        # the trunk's middle convolution (body index 2 * (depth // 2), depth >= 2), joined by the path's output
        depth = max(int(name.split(".")[1]) for name in convs if name.startswith("body.")) // 2 - 1
        names += [convs[f"body.{2 * (depth // 2)}.weight"].output[0], out.output[0]]
    return names


def context_convs(convs: dict[str, Any]) -> list[Any]:
    """A context path's Conv nodes in the order they run (``engines.arch_context.CONV_ORDER``), found by their
    weights' names (``context.down1.weight``, ``context.body.N.weight``, ...) in ``convs`` (weight name -> node);
    empty without a context path."""
    ordered = []
    for part in CONV_ORDER:
        if part == "body":
            layers = [(int(name.split(".")[2]), node) for name, node in convs.items()
                      if name.startswith("context.body.") and name.endswith(".weight")]
            ordered += [node for _, node in sorted(layers, key=lambda layer: layer[0])]
        elif f"context.{part}.weight" in convs:
            ordered.append(convs[f"context.{part}.weight"])
    return ordered


def residual_tensor(model_path: Path) -> str:
    """The residual: the output of the body's last convolution (the activation ``--residual-range`` fixes)."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    last = max(
        (int(node.input[1].split(".")[1]), node.output[0])
        for node in graph.node
        if node.op_type == "Conv" and node.input[1].startswith("body.") and node.input[1].endswith(".weight")
    )
    return last[1]


def range_overrides(model_path: Path, ranges: list[dict[str, float]]) -> dict[str, list[dict[str, Any]]]:
    """ONNX Runtime TensorQuantOverrides that pin each activation to the range QAT trained with."""
    names = activation_tensors(model_path)
    if len(names) != len(ranges):
        raise ValueError(
            f"checkpoint has {len(ranges)} activation ranges, the model {len(names)} activations"
        )
    return {
        name: [{"rmin": np.float32(values["low"]), "rmax": np.float32(values["high"])}]
        for name, values in zip(names, ranges, strict=True)
    }


def residual_override(model_path: Path, residual_range: float) -> dict[str, list[dict[str, Any]]]:
    """ONNX Runtime TensorQuantOverrides that fix the residual's range to [-R, R]."""
    if not residual_range > 0:
        raise ValueError(f"residual range must be positive, got {residual_range}")
    bound = np.float32(residual_range)
    return {residual_tensor(model_path): [{"rmin": -bound, "rmax": bound}]}


def quantize(
    model: Path,
    out: Path,
    windows: list[np.ndarray],
    method: str = "minmax",
    float_output_conv: bool = False,
    ranges: list[dict[str, float]] | None = None,
    residual_range: float | None = None,
    info: ModelInfo | None = None,
) -> None:
    """Write the int8 model; ``ranges`` (from a QAT checkpoint) fix the activation ranges instead of the
    calibration, so the int8 model rounds exactly as the model was trained to expect; ``residual_range`` R fixes
    the residual's (the body's last output) to [-R, R], as ``tools/train.py --qat-residual-range R`` trained it."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model_info = info if info is not None else read_model_info(model)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items: Iterator[np.ndarray] = iter(windows)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self._items, None)
            return None if item is None else feeds(item, model_info)

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=methods[method],
            nodes_to_exclude=float_tail_nodes(prepared, output_conv=float_output_conv),
            extra_options={
                # a recurrent model's next state must leave in float (rounded to 8 bits every frame, a running
                # average stalls): each quantised convolution gets its own copy of the pair, the output keeps the
                # float tensor
                "DedicatedQDQPair": model_info.recurrent,
                # The input is 8-bit video scaled to [0, 1]: uint8 with scale 1/255 represents it exactly.
                "TensorQuantOverrides": {
                    INPUT_NAME: [{"rmin": np.float32(0), "rmax": np.float32(1)}],
                    **({STATE_NAME: [{"rmin": np.float32(0), "rmax": np.float32(1)}]} if model_info.recurrent else {}),
                    **(range_overrides(prepared, ranges) if ranges else {}),
                    **(residual_override(prepared, residual_range) if residual_range is not None else {}),
                }
            },
        )
    source = onnx.load(str(model))
    quantized = onnx.load(str(out))
    metadata = {prop.key: prop.value for prop in source.metadata_props}
    metadata["streamer.precision"] = "int8"
    del quantized.metadata_props[:]
    for key, value in metadata.items():
        quantized.metadata_props.add(key=key, value=value)
    onnx.save(quantized, str(out))


def session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare(model: Path, quantized: Path, windows: list[np.ndarray], info: ModelInfo, threads: int) -> None:
    """Print the int8 model's deviation from the float model (PSNR between outputs) and both speeds."""
    reference, candidate = session(model, threads), session(quantized, threads)
    for window in windows:
        expected = reference.run([OUTPUT_NAME], feeds(window, info))[0]
        actual = candidate.run([OUTPUT_NAME], feeds(window, info))[0]
        fidelity = psnr(degrade.to_uint8(actual), degrade.to_uint8(expected))
        print(f"int8 vs float output: {fidelity:.2f} dB PSNR")
    _, channels, height, width = windows[0].shape
    for name, path in (("float", model), ("int8", quantized)):
        milliseconds = export_onnx.benchmark_ms(str(path), channels // 3, height, width, threads)
        print(f"{name}: {milliseconds:.1f} ms per {width}x{height} frame ({threads} threads)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, required=True, help="float ONNX model from tools/export_onnx.py"
    )
    parser.add_argument("--out", type=Path, help="default: NAME.int8.onnx next to the model")
    parser.add_argument("--clips", type=Path, nargs="+", required=True, help="video files or folders")
    parser.add_argument("--windows", type=int, default=32, help="calibration windows")
    parser.add_argument("--size", type=frame_size, default="640x360", help="WxH of the calibration frames")
    parser.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="minmax")
    parser.add_argument("--threads", type=int, default=2, help="threads for the comparison run")
    parser.add_argument(
        "--float-output-conv",
        action="store_true",
        help="keep the body's last convolution in float too (closer to the float model, a little slower)",
    )
    parser.add_argument(
        "--ranges-from",
        type=Path,
        help="checkpoint of a quantisation-aware fine-tune (tools/train.py --qat): use the activation ranges "
        "it trained with instead of calibrating them",
    )
    parser.add_argument(
        "--residual-range",
        type=residual_range_argument,
        metavar="R",
        help="round the residual (the body's last output) in [-R, R] instead of its calibrated range: finer "
        "steps for every frame, the rare larger values saturate; use the R the model was fine-tuned with "
        "(tools/train.py --qat-residual-range)",
    )
    args = parser.parse_args(argv)
    if args.residual_range is not None and args.float_output_conv:
        parser.error("--residual-range rounds the last convolution's output, which --float-output-conv keeps in float")
    ranges = None
    if args.ranges_from is not None:
        import torch

        ranges = torch.load(args.ranges_from, map_location="cpu", weights_only=False).get("qat_ranges")
        if not ranges:
            raise SystemExit(f"{args.ranges_from} has no qat_ranges (not trained with --qat)")
    out = args.out or args.model.with_name(args.model.stem + ".int8.onnx")
    clips = list_clips(args.clips)
    if not clips:
        raise SystemExit("no clips found")
    width, height = args.size
    info = read_model_info(args.model)
    windows = calibration_windows(clips, args.windows + 4, info, (width, height))
    out.parent.mkdir(parents=True, exist_ok=True)
    quantize(args.model, out, windows[:-4], args.method, args.float_output_conv, ranges, args.residual_range, info)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    compare(args.model, out, windows[-4:], info, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
