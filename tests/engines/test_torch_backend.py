"""The PyTorch backend: the ONNX graph interpreted by PyTorch, on the CPU here (float32) and on CUDA (fp16,
CUDA graphs) where a GPU is visible. Reference everywhere: ONNX Runtime on the CPU with the float model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engines import EngineError, create_engine, resolve_model
from engines.torch_backend import MAX_BATCH, TorchEngine
from tests.engines.test_engines import SHIPPED_MODELS, centre_frame_model
from tests.media import add_noise, clean_frames
from tools.gpu_scene import psnr


@pytest.fixture(scope="module")
def scene() -> dict[str, list[np.ndarray]]:
    """Camera-like moving content (the demo renderer) with sigma 18 noise, at a size that needs padding."""
    clean = clean_frames(122, 70, 7)
    return {"clean": clean, "noisy": add_noise(clean, 18.0)}


def torch_cpu(model: str | Path = "lite", **options: object) -> TorchEngine:
    return TorchEngine(resolve_model(str(model)), device="cpu", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_cpu_float_matches_onnx_runtime_on_camera_like_frames(name: str, scene: dict[str, list[np.ndarray]]) -> None:
    noisy, clean = scene["noisy"], scene["clean"]
    with create_engine("cpu", name, threads=1, int8=False) as reference, torch_cpu(name) as engine:
        for start in range(3):
            window = noisy[start : start + 5]
            ours, theirs = engine.infer(window), reference.infer(window)
            assert ours.shape == theirs.shape == clean[0].shape and ours.dtype == np.uint8
            assert psnr(ours, theirs) >= 60.0  # float32 both: at most a rare 1-level rounding difference
            target, source = clean[start + reference.info.reference_index], window[reference.info.reference_index]
            assert psnr(ours, target) > psnr(source, target) + 3.0  # it restores, as the CPU engine does


def test_batch_equals_one_by_one_and_sliding_windows_reuse_frames_correctly(scene: dict[str, list[np.ndarray]]) -> None:
    noisy = scene["noisy"]
    windows = [noisy[start : start + 5] for start in range(3)]
    with torch_cpu() as engine, create_engine("cpu", "lite", threads=1, int8=False) as reference:
        batched = engine.infer_batch(windows)
        assert engine.uploads == 7  # 7 distinct frames in the 3 overlapping windows
        # The same engine again, window by window (frames kept on the device from one call to the next).
        sliding = [engine.infer(window) for window in windows]
        assert engine.uploads == 7 + 0 + 1 + 1  # window 0 is still there; then one new frame per call
        fresh = [engine.infer([frame.copy() for frame in window]) for window in windows]  # new arrays
        for window, one, two, three in zip(windows, batched, sliding, fresh, strict=True):
            assert np.array_equal(one, two) and np.array_equal(two, three)
            assert psnr(one, reference.infer(window)) >= 60.0
        assert len({one.tobytes() for one in batched}) == 3
        assert engine.calls == 9


def test_padding_and_crop_for_odd_sizes(tmp_path: Path) -> None:
    """An identity model (pad multiple 4) gives back the reference frame exactly at sizes that need padding;
    the real model's output has the input's size and matches ONNX Runtime's."""
    rng = np.random.default_rng(5)
    identity = centre_frame_model(tmp_path / "identity.onnx", window=3)
    with TorchEngine(identity, device="cpu") as engine:
        for height, width in ((37, 50), (1, 1), (8, 8), (5, 129)):
            frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(3)]
            assert np.array_equal(engine.infer(frames), frames[1])
    frames = [rng.integers(0, 256, (45, 67, 3), dtype=np.uint8) for _ in range(5)]
    with torch_cpu() as engine, create_engine("cpu", "lite", threads=1, int8=False) as reference:
        ours = engine.infer(frames)
        assert ours.shape == (45, 67, 3)
        assert psnr(ours, reference.infer(frames)) >= 60.0


def _constant(name: str, value: list[float] | list[int] | float, dtype: type = np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype), name)


def test_every_supported_op_matches_onnx_runtime(tmp_path: Path) -> None:
    """A graph using the ops the shipped models do not (asymmetric Conv pads, DCR DepthToSpace, SpaceToDepth,
    Reshape with 0 and -1, Transpose, Concat, Sub, Mul, LeakyRelu, Sigmoid, Identity, ReduceMean) runs as ONNX Runtime runs it."""
    rng = np.random.default_rng(6)
    nodes = [
        helper.make_node("SpaceToDepth", ["frames"], ["s2d"], blocksize=2),  # [1, 36, 10, 14]
        helper.make_node("Conv", ["s2d", "w", "b"], ["conv"], pads=[1, 0, 0, 2], kernel_shape=[2, 3]),
        helper.make_node("LeakyRelu", ["conv"], ["act"], alpha=0.2),
        helper.make_node("ReduceMean", ["act"], ["mean"], axes=[2, 3]),  # [1, 4, 1, 1], as a gate's frame cue
        helper.make_node("Add", ["act", "mean"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "half"], ["scaled"]),
        helper.make_node("Sigmoid", ["act"], ["squashed"]),
        helper.make_node("Concat", ["scaled", "squashed", "act", "scaled"], ["cat"], axis=1),  # [1, 16, 10, 14]
        helper.make_node("DepthToSpace", ["cat"], ["d2s"], blocksize=2, mode="DCR"),  # [1, 4, 20, 28]
        helper.make_node("Reshape", ["d2s", "flat"], ["reshaped"]),  # [1, 4, 4, 140]
        helper.make_node("Transpose", ["reshaped"], ["transposed"], perm=[0, 1, 3, 2]),
        helper.make_node("Transpose", ["transposed"], ["back"], perm=[0, 1, 3, 2]),
        helper.make_node("Reshape", ["back", "unflat"], ["image"]),  # [1, 4, 20, 28]
        helper.make_node("Slice", ["image", "zero", "three", "one"], ["residual"]),
        helper.make_node("Slice", ["frames", "three", "six", "one"], ["reference"]),
        helper.make_node("Sub", ["reference", "residual"], ["difference"]),
        helper.make_node("Identity", ["difference"], ["same"]),
        helper.make_node("Clip", ["same", "lo", "hi"], ["restored"]),
    ]
    initializers = [
        numpy_helper.from_array(rng.normal(0, 0.2, (4, 36, 2, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "b"),
        _constant("half", [0.5], np.float32), _constant("lo", 0.0, np.float32), _constant("hi", 1.0, np.float32),
        _constant("flat", [0, 4, 4, -1]), _constant("unflat", [0, 0, 20, -1]),
        _constant("zero", [0]), _constant("three", [3]), _constant("six", [6]), _constant("one", [1]),
    ]
    graph = helper.make_graph(
        nodes, "ops",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, [1, 9, 20, 28])],
        [helper.make_tensor_value_info("restored", TensorProto.FLOAT, [1, 3, 20, 28])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"streamer.window": "3", "streamer.pad_multiple": "4"})
    path = tmp_path / "ops.onnx"
    onnx.save(model, str(path))
    frames = [rng.integers(0, 256, (20, 28, 3), dtype=np.uint8) for _ in range(3)]
    with TorchEngine(path, device="cpu") as engine, create_engine("cpu", path, threads=1) as reference:
        ours, theirs = engine.infer(frames), reference.infer(frames)
    assert psnr(ours, theirs) >= 60.0 and 0 < np.abs(ours.astype(int) - frames[1].astype(int)).mean()


def test_unsupported_ops_and_int8_models_are_refused_by_name(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Tanh", ["frames"], ["squashed"], name="squash"),
         helper.make_node("Slice", ["squashed", "starts", "ends", "axes"], ["restored"])],
        "tanh",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("restored", TensorProto.FLOAT, [1, 3, "h", "w"])],
        initializer=[numpy_helper.from_array(np.array(v, np.int64), n)
                     for v, n in (([0], "starts"), ([3], "ends"), ([1], "axes"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"streamer.window": "1"})
    onnx.save(model, str(tmp_path / "tanh.onnx"))
    with pytest.raises(EngineError, match=r"cannot run op\(s\) Tanh x1 \(first: squash\)"):
        TorchEngine(tmp_path / "tanh.onnx", device="cpu").activate()
    with pytest.raises(EngineError, match=r"QuantizeLinear.*not an int8 twin"):
        TorchEngine(resolve_model("lite").with_name("lite.int8.onnx"), device="cpu").activate()


def test_bad_calls_get_clear_errors() -> None:
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, (16, 24, 3), dtype=np.uint8) for _ in range(5)]
    engine = torch_cpu()
    with pytest.raises(EngineError, match="before activate"):
        engine.infer_batch([frames])
    with engine:
        with pytest.raises(EngineError, match="at least one window"):
            engine.infer_batch([])
        with pytest.raises(EngineError, match="wants 5 frames"):
            engine.infer_batch([frames, frames[:4]])
        with pytest.raises(EngineError, match="every frame of a batch must be 16x24x3 uint8"):
            engine.infer_batch([frames, [np.zeros((16, 26, 3), np.uint8)] * 5])
        with pytest.raises(EngineError, match="every frame of a batch must be"):
            engine.infer_batch([[frame.astype(np.float32) for frame in frames]])
        with pytest.raises(EngineError, match=f"must be 1..{MAX_BATCH}"):
            engine.infer_batch([frames] * (MAX_BATCH + 1))
        with pytest.raises(EngineError, match="RGB uint8 arrays"):
            engine.infer_batch([[frame[..., 0] for frame in frames]])
        assert engine.infer(frames).shape == (16, 24, 3)  # still usable after the refusals


def test_cuda_kind_is_registered_and_refuses_clearly_without_a_gpu() -> None:
    from streamer.config import EngineConfig

    assert EngineConfig(type="cuda").type == "cuda"
    engine = create_engine("cuda", "lite-fast")
    assert isinstance(engine, TorchEngine) and engine.fp16 and engine.cuda_graphs
    assert engine.model_path.name == "lite-fast.onnx"  # the float model, never the int8 twin
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="no CUDA device"):
            engine.activate()


# -- on a GPU ----------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_cuda_fp16_matches_onnx_runtime_within_45_db(name: str) -> None:
    from tools.gpu_scene import SceneFrames

    source = SceneFrames(642, 362)  # not a multiple of 4: padding on the GPU too
    pairs = [source.pair(index) for index in range(7)]
    noisy = [noisy for _, noisy in pairs]
    windows = [noisy[start : start + 5] for start in range(3)]
    with create_engine("cpu", name, int8=False) as reference, create_engine("cuda", name) as engine:
        assert isinstance(engine, TorchEngine)
        batched = engine.infer_batch(windows)
        for window, together in zip(windows, batched, strict=True):
            alone, theirs = engine.infer(window), reference.infer(window)
            assert psnr(alone, theirs) >= 45.0 and psnr(together, theirs) >= 45.0
            assert psnr(alone, together) >= 50.0  # batched kernels may round differently, not visibly


@pytest.mark.gpu
def test_cuda_graphs_eager_and_fp32_all_match_onnx_runtime() -> None:
    from tools.gpu_scene import SceneFrames

    source = SceneFrames(640, 360, seed=4)
    frames = [source.pair(index)[1] for index in range(5)]
    path = resolve_model("lite")
    with TorchEngine(path, cuda_graphs=True) as graphs, TorchEngine(path, cuda_graphs=False) as eager, \
            TorchEngine(path, fp16=False) as full, create_engine("cpu", "lite", int8=False) as reference:
        theirs, captured = reference.infer(frames), graphs.infer(frames)
        assert graphs.cuda_graphs and not eager.cuda_graphs and not full.fp16
        assert psnr(captured, eager.infer(frames)) >= 50.0
        assert psnr(captured, theirs) >= 45.0 and psnr(full.infer(frames), theirs) >= 45.0
        assert graphs.time_compute(2, 360, 640, repeats=3) > 0
