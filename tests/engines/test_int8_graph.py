"""engines.int8_graph: the CPU engine's faster form of an int8 graph restores exactly what the file's graph does."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engines import int8_twin, resolve_model
from engines.int8_graph import (
    VIDEO_SCALE,
    feed_uint8_frames,
    move_depth_to_space_before_dequantize,
    optimize_for_cpu,
    pad_output_channels,
)
from engines.onnx_cpu import OnnxCpuEngine
from engines.processing import pack_window, reference_planes
from tests.engines.test_engines import SHIPPED_MODELS


def moving_noisy_frames(count: int, height: int = 68, width: int = 92) -> list[np.ndarray]:
    """A textured scene sliding one pixel a frame, with sensor noise: every part of the graph has work to do."""
    rng = np.random.default_rng(7)
    scene = rng.integers(0, 256, (height // 4 + 2, width // 4 + count, 3)).repeat(4, 0).repeat(4, 1)
    frames = []
    for index in range(count):
        clean = scene[:height, index : index + width].astype(np.float32)
        frames.append(np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8))
    return frames


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_optimised_int8_engine_restores_bit_for_bit_what_the_file_does(name: str) -> None:
    path = int8_twin(resolve_model(name))
    assert path is not None
    frames = moving_noisy_frames(9)
    results = []
    for optimize in (False, True):
        engine = OnnxCpuEngine(path, threads=1, optimize=optimize)
        with engine:
            # the window slides (a recurrent model carries its state), then a gap restarts it
            restored = [engine.infer(frames[start : start + 5]) for start in (0, 1, 2, 4)]
            # two cameras' windows in one batch (a shared engine), each with its own state
            for start in (1, 2):
                restored += engine.infer_batch([frames[start : start + 5], frames[start + 2 : start + 7]], ["a", "b"])
            assert engine.uint8_input is optimize
            results.append((restored, engine.recurrent_counts()))
    for plain, optimised in zip(results[0][0], results[1][0], strict=True):
        assert np.array_equal(plain, optimised)
    assert results[0][1] == results[1][1]


def test_shipped_detail_graphs_shuffle_in_int8() -> None:
    for name, moved in (("lite", 0), ("lite-detail", 2), ("lite-detail-recurrent", 2)):
        path = int8_twin(resolve_model(name))
        assert path is not None
        model = onnx.load(str(path))
        assert pad_output_channels(model.graph) == moved // 2  # the detail path's last convolution: 12 -> 16
        assert move_depth_to_space_before_dequantize(model.graph) == moved
        assert feed_uint8_frames(model.graph)
        assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
        assert not any(node.op_type == "QuantizeLinear" and "frames" in node.input for node in model.graph.node)


def quantize_dequantize_model(scale: float, zero_point: int = 0, second_reader: bool = False) -> onnx.ModelProto:
    """frames -> QuantizeLinear(scale, zero_point) -> DequantizeLinear -> DepthToSpace -> restored."""
    initializers = [
        numpy_helper.from_array(np.array(scale, dtype=np.float32), "scale"),
        numpy_helper.from_array(np.array(zero_point, dtype=np.uint8), "zero_point"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["frames", "scale", "zero_point"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero_point"], ["dq"]),
        helper.make_node("DepthToSpace", ["dq"], ["shuffled"], blocksize=2, mode="CRD"),
    ]
    output = "shuffled"
    if second_reader:  # frames read twice: the input must stay float
        nodes.append(helper.make_node("DepthToSpace", ["frames"], ["shuffled_frames"], blocksize=2, mode="CRD"))
        nodes.append(helper.make_node("Add", ["shuffled", "shuffled_frames"], ["restored"]))
        output = "restored"
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("frames", TensorProto.FLOAT, [1, 12, 2, 3])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, 3, 4, 6])], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run(model: onnx.ModelProto, frames: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"frames": frames})[0])


def test_every_8_bit_value_reaches_the_graph_as_the_float_input_did() -> None:
    model = quantize_dequantize_model(float(VIDEO_SCALE))
    original = onnx.ModelProto()
    original.CopyFrom(model)
    rewritten, uint8_input = optimize_for_cpu(model)
    assert uint8_input
    assert [node.op_type for node in rewritten.graph.node] == ["DepthToSpace", "DequantizeLinear"]
    values = np.arange(256, dtype=np.uint8)
    for offset in range(0, 256, 64):  # 72 values a pass: every one of the 256 at least once
        window = np.roll(values, -offset)[:72].reshape(1, 12, 2, 3)
        as_float = np.empty(window.shape, dtype=np.float32)
        np.multiply(window, VIDEO_SCALE, out=as_float)  # what pack_window feeds a float input
        assert np.array_equal(run(original, as_float), run(rewritten, window))


def test_rewrites_leave_other_patterns_alone() -> None:
    other_scale = quantize_dequantize_model(0.01)
    assert not feed_uint8_frames(other_scale.graph)
    assert move_depth_to_space_before_dequantize(other_scale.graph) == 1  # any per-tensor scale commutes
    assert not feed_uint8_frames(quantize_dequantize_model(float(VIDEO_SCALE), zero_point=3).graph)
    assert not feed_uint8_frames(quantize_dequantize_model(float(VIDEO_SCALE), second_reader=True).graph)
    per_channel = quantize_dequantize_model(float(VIDEO_SCALE))
    dequantize = per_channel.graph.node[1]
    dequantize.attribute.append(helper.make_attribute("axis", 1))
    assert move_depth_to_space_before_dequantize(per_channel.graph) == 0


def test_restarted_state_from_uint8_windows_equals_the_float_one() -> None:
    frames = moving_noisy_frames(5)
    as_float = pack_window(frames, 4)
    as_bytes = pack_window(frames, 4, np.uint8)
    assert as_bytes.dtype == np.uint8 and np.array_equal(as_bytes * VIDEO_SCALE, as_float)
    planes = reference_planes(as_bytes, 2)
    assert planes.dtype == np.float32 and np.array_equal(planes, reference_planes(as_float, 2))


def test_float_models_are_loaded_as_they_are() -> None:
    engine = OnnxCpuEngine(resolve_model("lite"), threads=1)
    with engine:
        assert not engine.uint8_input


def test_padded_convolution_keeps_its_channels_and_values() -> None:
    """A QDQ convolution with 12 outputs, padded to 16 and sliced back: same output, same shape."""
    rng = np.random.default_rng(3)
    weight = rng.integers(-100, 100, (12, 4, 3, 3), dtype=np.int8)
    initializers = [
        numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
        numpy_helper.from_array(weight, "w_q"),
        numpy_helper.from_array(rng.uniform(0.001, 0.01, 12).astype(np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(12, np.int8), "w_zero"),
        numpy_helper.from_array(rng.integers(-500, 500, 12).astype(np.int32), "b_q"),
        numpy_helper.from_array(rng.uniform(1e-5, 1e-4, 12).astype(np.float32), "b_scale"),
        numpy_helper.from_array(np.zeros(12, np.int32), "b_zero"),
        numpy_helper.from_array(np.array(0.05, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "y_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["frames", "x_scale", "x_zero"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["x"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=0),
        helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zero"], ["b"], axis=0),
        helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["y", "y_scale", "y_zero"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zero"], ["y_dq"]),
        helper.make_node("DepthToSpace", ["y_dq"], ["restored"], blocksize=2, mode="CRD"),
    ]
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("frames", TensorProto.FLOAT, [1, 4, 10, 14])],
        [helper.make_tensor_value_info("restored", TensorProto.FLOAT, [1, 3, 20, 28])], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    original = onnx.ModelProto()
    original.CopyFrom(model)
    rewritten, uint8_input = optimize_for_cpu(model)
    assert not uint8_input  # the input scale is not 1/255
    assert "Slice" in [node.op_type for node in rewritten.graph.node]
    conv_weight = next(item for item in rewritten.graph.initializer if item.name == "w_q")
    assert list(conv_weight.dims) == [16, 4, 3, 3]
    frames = rng.uniform(-2, 2, (1, 4, 10, 14)).astype(np.float32)
    expected = run(original, frames)
    assert expected.shape == (1, 3, 20, 28) and np.array_equal(run(rewritten, frames), expected)


def test_a_faster_graph_onnx_runtime_refuses_falls_back_to_the_files(monkeypatch: pytest.MonkeyPatch,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """An ONNX Runtime without a kernel the rewrite uses (older versions) must not cost the camera its engine."""
    import engines.int8_graph

    def unloadable(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
        model.graph.node.append(helper.make_node("NoSuchOperator", ["frames"], ["nothing"]))
        return model, True

    monkeypatch.setattr(engines.int8_graph, "optimize_for_cpu", unloadable)
    path = int8_twin(resolve_model("lite"))
    assert path is not None
    frames = moving_noisy_frames(5)
    with OnnxCpuEngine(path, threads=1) as engine:
        assert not engine.uint8_input
        restored = engine.infer(frames)
    with OnnxCpuEngine(path, threads=1, optimize=False) as plain:
        assert np.array_equal(restored, plain.infer(frames))
    assert "refused the faster int8 graph" in caplog.text
