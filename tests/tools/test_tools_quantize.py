"""Post-training int8 quantisation keeps the model contract and stays close to the float model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from synthetic_media import export_tiny_model, moving_frames, write_clip

from engines import create_engine
from tools import quantize


def test_quantize_writes_int8_twin_that_the_cpu_engine_picks(tmp_path: Path) -> None:
    _, float_model = export_tiny_model(tmp_path, causal=False, weight_std=0.05)
    clip = write_clip(tmp_path / "clip.mp4", moving_frames(30, 64, 96, seed=3))

    quantize.main(["--model", str(float_model), "--clips", str(clip), "--windows", "4", "--size", "96x64",
                   "--threads", "1"])

    twin = tmp_path / "tiny.int8.onnx"
    proto = onnx.load(str(twin))
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    assert meta["streamer.precision"] == "int8" and meta["streamer.window"] == "5"
    assert any(node.op_type == "QuantizeLinear" for node in proto.graph.node)
    assert proto.graph.node[-1].op_type == "Clip"  # the residual tail stays in float

    frames = quantize.calibration_windows([clip], 1, create_engine("cpu", float_model, int8=False).info, (96, 64))
    outputs = [
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["restored"], {"frames": frames[0]})[0]
        for path in (float_model, twin)
    ]
    assert np.abs(outputs[0] - outputs[1]).mean() < 0.01
    engine = create_engine("cpu", float_model, threads=1)
    assert engine.model_path == twin and engine.info.precision == "int8"

    # --float-output-conv: the convolution feeding the residual addition reads float weights, the others int8
    quantize.main(["--model", str(float_model), "--clips", str(clip), "--windows", "4", "--size", "96x64",
                   "--threads", "1", "--out", str(tmp_path / "tail.int8.onnx"), "--float-output-conv"])
    graph = onnx.load(str(tmp_path / "tail.int8.onnx")).graph
    producers = {output: node for node in graph.node for output in node.output}
    residual_conv = next(producers[name] for node in graph.node if node.op_type == "Add"
                         for name in node.input if name in producers and producers[name].op_type == "Conv")
    assert residual_conv.input[1] in {initializer.name for initializer in graph.initializer}  # float weights
    int8_convs = [node for node in graph.node if node.op_type == "Conv"
                  and producers.get(node.input[1]) is not None and producers[node.input[1]].op_type == "DequantizeLinear"]
    assert int8_convs


@pytest.mark.parametrize("gate_context", [0, 1], ids=["local-gate", "gate-with-frame-cue"])
def test_a_recurrent_models_int8_twin_keeps_its_state_input_and_state_paths_in_float(
    tmp_path: Path, gate_context: int
) -> None:
    from tests.engines.test_recurrent import export_recurrent_model

    float_model = export_recurrent_model(tmp_path, name="rec", weight_std=0.05, gate_context=gate_context)
    clip = write_clip(tmp_path / "clip.mp4", moving_frames(30, 64, 96, seed=3))

    quantize.main(["--model", str(float_model), "--clips", str(clip), "--windows", "4", "--size", "96x64",
                   "--threads", "1"])

    proto = onnx.load(str(tmp_path / "rec.int8.onnx"))
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    assert meta["streamer.recurrent"] == "1" and meta["streamer.precision"] == "int8"
    assert [item.name for item in proto.graph.input] == ["frames", "state"]
    assert [item.name for item in proto.graph.output] == ["restored", "next_state"]
    # the gate's blend of the reference frame into the state stays in float: the state is never rounded to 8 bits
    blend = [node for node in proto.graph.node if node.op_type in ("Sigmoid", "Sub", "Mul")]
    assert len(blend) == 3 and not any(node.input[0].endswith("DequantizeLinear_Output") for node in blend)
    producers = {output: node for node in proto.graph.node for output in node.output}
    assert producers["next_state"].op_type == "Add" and all(
        producers[name].op_type != "DequantizeLinear" for name in producers["next_state"].input if name in producers
    )
    # the reference path (the skip and the state's fusion read the gated estimate) and the gate stay in float:
    # rounding the skip's input costs the int8 twin up to 1 dB
    convs = [node for node in proto.graph.node if node.op_type == "Conv"]
    assert len([node for node in convs if node.input[0] == "next_state"]) == 2
    gate = [node for node in convs if node.name.startswith("/gate/")]
    expected = ["gate.context.weight"] * gate_context + ["gate.inlet.weight", "gate.out.weight"]
    assert sorted(node.input[1] for node in gate) == expected
    assert all(producers[node.input[0]].op_type != "DequantizeLinear" for node in gate)
    engine = create_engine("cpu", float_model, threads=1)
    assert engine.info.recurrent and engine.info.precision == "int8"
    with engine:
        frames = [np.full((64, 96, 3), 100 + 10 * index, np.uint8) for index in range(6)]
        first, second = engine.infer_batch([frames[:5]], ["a"])[0], engine.infer_batch([frames[1:]], ["a"])[0]
    assert first.shape == second.shape == (64, 96, 3)
