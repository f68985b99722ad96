"""The engine interface, the CPU backend on a small ONNX model built here, the shipped model's contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from engines import DEFAULT_MODEL, EngineError, create_engine, int8_twin
from engines.processing import pack_window, unpack_output

GPU_MODELS = [  # what TensorRT runs
    "lite", "lite-causal", "lite-fast", "lite-detail", "lite-detail-causal", "lite-fine", "lite-fine-wide",
]
SHIPPED_MODELS = [*GPU_MODELS, "lite-recurrent", "lite-recurrent-wide", "lite-detail-recurrent"]  # the PyTorch backend runs all


def centre_frame_model(path: Path, window: int = 3, metadata: dict[str, str] | None = None) -> Path:
    """An ONNX model of the engine contract whose 'restoration' returns the reference frame."""
    reference = (window - 1) // 2
    starts = helper.make_tensor("starts", TensorProto.INT64, [1], [3 * reference])
    ends = helper.make_tensor("ends", TensorProto.INT64, [1], [3 * reference + 3])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [helper.make_node("Slice", ["frames", "starts", "ends", "axes"], ["restored"])],
        "centre",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, [1, 3 * window, "h", "w"])],
        [helper.make_tensor_value_info("restored", TensorProto.FLOAT, [1, 3, "h", "w"])],
        initializer=[starts, ends, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    props = {"streamer.window": str(window), "streamer.reference_index": str(reference), "streamer.pad_multiple": "4"}
    props.update(metadata or {})
    helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


def test_pack_and_unpack_roundtrip_with_padding() -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (21, 30, 3), dtype=np.uint8) for _ in range(3)]
    tensor = pack_window(frames, 8)
    assert tensor.shape == (1, 9, 24, 32) and tensor.dtype == np.float32
    assert np.all(tensor[0, 3:6, 21:, :30] == tensor[0, 3:6, 20:21, :30])  # edge replicated
    assert np.array_equal(unpack_output(tensor[:, 3:6], 21, 30), frames[1])


def test_cpu_engine_reads_metadata_and_runs(tmp_path: Path) -> None:
    engine = create_engine("cpu", centre_frame_model(tmp_path / "m.onnx"), threads=1)
    assert (engine.info.window, engine.info.reference_index, engine.info.lookahead) == (3, 1, 1)
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (37, 50, 3), dtype=np.uint8) for _ in range(3)]
    with engine:
        assert np.array_equal(engine.infer(frames), frames[1])
        with pytest.raises(EngineError, match="wants 3 frames"):
            engine.infer(frames[:2])


def test_bad_models_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="not found"):
        create_engine("cpu", tmp_path / "absent.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(EngineError, match="cannot read model"):
        create_engine("cpu", tmp_path / "junk.onnx")
    with pytest.raises(EngineError, match="colorspace"):
        create_engine("cpu", centre_frame_model(tmp_path / "yuv.onnx", metadata={"streamer.colorspace": "yuv"}))


def test_passthrough_engine() -> None:
    with create_engine("passthrough") as engine:
        frame = np.zeros((4, 4, 3), np.uint8)
        assert engine.infer([frame]) is frame


@pytest.mark.parametrize("int8", [True, False], ids=["int8", "float"])
@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_model_follows_the_contract(name: str, int8: bool) -> None:
    assert DEFAULT_MODEL.exists(), "the shipped lite model must be in the package"
    engine = create_engine("cpu", name, threads=2, int8=int8)
    assert engine.info.window == 5 and engine.info.scale == 1 and engine.info.name == name
    assert engine.info.lookahead == (0 if name.endswith("-causal") else 2)
    assert engine.info.precision == ("int8" if int8 else "float")
    rng = np.random.default_rng(2)
    flat = np.full((90, 160, 3), 128, np.uint8)
    noisy = [np.clip(flat + rng.normal(0, 20, flat.shape), 0, 255).astype(np.uint8) for _ in range(5)]
    with engine:
        out = engine.infer(noisy)
    assert out.shape == flat.shape and out.dtype == np.uint8
    reference = noisy[engine.info.reference_index]
    assert np.abs(out.astype(float) - 128).mean() < 0.5 * np.abs(reference.astype(float) - 128).mean()


@pytest.mark.gpu
def test_tensorrt_engine_matches_cpu() -> None:
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in range(5)]
    with create_engine("cpu", int8=False) as cpu, create_engine("tensorrt", fp16=True) as gpu:
        difference = np.abs(cpu.infer(frames).astype(int) - gpu.infer(frames).astype(int))
    assert difference.mean() < 1.0 and difference.max() <= 8


def test_window_packer_matches_pack_window_as_the_window_slides() -> None:
    from engines.processing import WindowPacker

    rng = np.random.default_rng(4)
    stream = [rng.integers(0, 256, (13, 22, 3), dtype=np.uint8) for _ in range(8)]
    packer = WindowPacker(4)
    for start in range(4):
        window = stream[start : start + 5]
        assert np.array_equal(packer.pack(window), pack_window(window, 4))
    padded_edge = [stream[0], stream[0], stream[0], stream[1], stream[2]]
    assert np.array_equal(packer.pack(padded_edge), pack_window(padded_edge, 4))


def test_int8_twin_is_picked_only_when_present(tmp_path: Path) -> None:
    model = tmp_path / "mine.onnx"
    model.write_bytes(b"")
    assert int8_twin(model) == model
    twin = tmp_path / "mine.int8.onnx"
    twin.write_bytes(b"")
    assert int8_twin(model) == twin
    assert int8_twin(twin) == twin


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_int8_twin_restores_like_the_float_model(name: str) -> None:
    """On smooth, camera-like moving content with sigma 15 noise each shipped model restores its reference frame
    by > 5 dB, and its int8 twin (nearly) as well as the float one: within 0.5 dB and ~1 level RMS."""
    rng = np.random.default_rng(4)
    rows, cols = np.mgrid[0:176, 0:340].astype(np.float32)
    canvas = np.stack(
        [128 + 60 * np.sin(cols / 9 + c) * np.cos(rows / 13 - c) + 30 * np.sin((cols + rows) / 5 + 2 * c)
         for c in range(3)], axis=-1)
    canvas[60:120, 100:200] += 40
    frames = [np.clip(canvas[:, 2 * i : 2 * i + 320] + rng.normal(0, 15, (176, 320, 3)), 0, 255).astype(np.uint8)
              for i in range(5)]

    def psnr(image: np.ndarray) -> float:
        return float(10 * np.log10(255**2 / np.mean((image.astype(np.float64) - clean) ** 2)))

    with create_engine("cpu", name, threads=2, int8=False) as floating, create_engine("cpu", name, threads=2) as quantized:
        assert quantized.info.precision == "int8"
        index = quantized.info.reference_index
        clean = canvas[:, 2 * index : 2 * index + 320]
        expected = floating.infer(frames)
        actual = quantized.infer(frames)
    assert psnr(actual) > psnr(frames[index]) + 5
    assert psnr(actual) > psnr(expected) - 0.5
    rms = float(np.sqrt(np.mean((expected.astype(np.float64) - actual) ** 2)))
    assert rms < 1.5, f"int8 output differs from float by {rms:.2f} levels RMS"
