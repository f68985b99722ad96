"""A recurrent model on the CPU engine: each stream's state goes back in, only to the window after it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from engines import create_engine, resolve_model
from engines.arch import build_model, preset
from engines.processing import pack_window
from tools import export_onnx


def export_recurrent_model(
    folder: Path, name: str = "tiny", weight_std: float = 0.2, recurrent: int = 1, gate_context: int = 0
) -> Path:
    """A random-weight recurrent ``tiny`` model (state paths non-zero) as ``folder/NAME.onnx``; ``recurrent=2``
    feeds its restored frame back as the state; ``gate_context=1`` gives its gate the frame-wide cue."""
    torch.manual_seed(0)
    config = dataclasses.replace(preset("tiny", recurrent=True), recurrent=recurrent, gate_context=gate_context)
    model = build_model(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, weight_std)
    path = folder / f"{name}.onnx"
    path.write_bytes(export_onnx.to_onnx_bytes(model, name=name))
    return path


def direct(
    session: ort.InferenceSession, window: list[np.ndarray], state: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """What the model computes for ``window`` with ``state`` (None: the reference frame): (restored, next state),
    float [1, 3, H, W]."""
    frames = pack_window(window, 4)
    feed = frames[:, 6:9] if state is None else state
    restored, next_state = session.run(["restored", "next_state"], {"frames": frames, "state": feed})
    return restored, next_state


def assert_restores(got: np.ndarray, expected: np.ndarray) -> None:
    """``got`` (uint8 H x W x 3 from the engine) is ``expected`` (float [1, 3, H, W]) within one 8-bit level."""
    levels = expected[0].transpose(1, 2, 0) * 255
    assert np.abs(got.astype(np.float32) - levels).max() <= 0.5 + 1e-3


@pytest.mark.parametrize("recurrent", [1, 2], ids=["estimate", "output"])
def test_cpu_engine_feeds_each_streams_previous_output_back_and_resets_after_a_gap(
    tmp_path: Path, recurrent: int
) -> None:
    path = export_recurrent_model(tmp_path, recurrent=recurrent)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (20, 28, 3), dtype=np.uint8) for _ in range(11)]
    other = [rng.integers(0, 256, (20, 28, 3), dtype=np.uint8) for _ in range(6)]
    engine = create_engine("cpu", model=str(path), threads=1)
    assert engine.info.recurrent
    with engine:
        state = None
        for start in range(4):  # camera "a" slides by one frame; camera "b" runs in between, in one batch
            window = frames[start : start + 5]
            expected, state = direct(session, window, state)
            got = engine.infer_batch([window, other[start % 2 : start % 2 + 5]], ["a", "b"])[0]
            assert_restores(got, expected)
        # the state changed what came out: a fresh start on the same window differs
        assert np.abs(direct(session, frames[3:8], None)[0] - expected).max() > 1e-3
        # a gap (frame 6 dropped, or restored at another ladder level): the state is not fed across it
        assert_restores(engine.infer_batch([frames[5:10]], ["a"])[0], direct(session, frames[5:10], None)[0])
        # a window of another size on the same stream after it: no state of the wrong size either
        small = [frame[:12, :16] for frame in frames[6:11]]
        assert_restores(engine.infer_batch([small], ["a"])[0], direct(session, small, None)[0])


@pytest.mark.parametrize(
    ("recurrent", "gate_context"), [(1, 0), (2, 0), (1, 1)], ids=["estimate", "output", "gate-with-frame-cue"]
)
def test_torch_backend_feeds_each_streams_state_back_on_the_device_as_the_cpu_engine_does(
    tmp_path: Path, recurrent: int, gate_context: int
) -> None:
    """The PyTorch backend (float32 on the CPU here; the same graph code runs on CUDA) keeps each stream's state
    on its device: batched with another camera, slid by one frame, restarted after a gap and a size change, it
    restores what ONNX Runtime computes with the state fed back by hand, and counts as the CPU engine does."""
    from engines.torch_backend import TorchEngine

    path = export_recurrent_model(tmp_path, recurrent=recurrent, gate_context=gate_context)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, (20, 28, 3), dtype=np.uint8) for _ in range(11)]
    other = [rng.integers(0, 256, (20, 28, 3), dtype=np.uint8) for _ in range(9)]
    with TorchEngine(path, device="cpu") as engine:
        assert engine.info.recurrent
        state, other_state = None, None
        for start in range(4):  # "a" and "b" slide by one frame each, in one batch, then "b" alone
            window, other_window = frames[start : start + 5], other[start : start + 5]
            expected, state = direct(session, window, state)
            other_expected, other_state = direct(session, other_window, other_state)
            got, other_got = engine.infer_batch([window, other_window], ["a", "b"])
            assert_restores(got, expected)
            assert_restores(other_got, other_expected)
        assert_restores(engine.infer_batch([other[4:9]], ["b"])[0], direct(session, other[4:9], other_state)[0])
        assert np.abs(direct(session, frames[3:8], None)[0] - expected).max() > 1e-3  # the state mattered
        assert_restores(engine.infer_batch([frames[5:10]], ["a"])[0], direct(session, frames[5:10], None)[0])  # gap
        small = [frame[:12, :16] for frame in frames[6:11]]
        assert_restores(engine.infer_batch([small], ["a"])[0], direct(session, small, None)[0])  # other size
        assert engine.recurrent_counts("a") == (3, 3) and engine.recurrent_counts("b") == (4, 1)
        engine.forget("b")
        assert engine.recurrent_counts() == (3, 3)


def test_tensorrt_refuses_a_recurrent_model_by_name_and_auto_falls_back(tmp_path: Path) -> None:
    from engines import EngineError, activate_engine
    from engines.tensorrt_backend import TensorRTEngine

    path = export_recurrent_model(tmp_path)
    try:
        TensorRTEngine(path)
    except EngineError as error:
        assert "recurrent" in str(error) and "cpu or cuda (PyTorch) backend" in str(error)
    else:
        raise AssertionError("TensorRT took a recurrent model")
    engine = activate_engine("auto", model=str(path), threads=1)
    try:
        assert engine.backend in ("cpu", "cuda") and engine.info.recurrent
    finally:
        engine.deactivate()


def test_shipped_lite_recurrent_improves_a_still_noisy_scene_after_its_first_frame_and_restarts_after_a_gap() -> None:
    """On a fixed camera's view (a still textured scene, fresh σ20 noise every frame) the shipped model's state
    makes every later frame better than the stream's first (+0.6 to +0.9 dB here); a stream that skips a frame
    starts again from the reference frame (first-frame quality)."""
    rng = np.random.default_rng(7)
    rows, cols = np.mgrid[0:96, 0:160].astype(np.float32)
    clean = np.stack(
        [128 + 50 * np.sin(cols / 7 + c) * np.cos(rows / 11 - c) + 25 * np.sin((cols + rows) / 4 + c) for c in range(3)],
        axis=-1,
    ).clip(0, 255)
    frames = [np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8) for _ in range(16)]

    def psnr(image: np.ndarray) -> float:
        return float(10 * np.log10(255**2 / np.mean((image.astype(np.float64) - clean) ** 2)))

    with create_engine("cpu", "lite-recurrent", threads=1) as engine:
        assert engine.info.recurrent and engine.info.precision == "int8"
        scores = [psnr(engine.infer_batch([frames[start : start + 5]], ["cam"])[0]) for start in range(12)]
        gap = psnr(engine.infer_batch([frames[11:16]], ["cam"])[0])  # skipped the window starting at frame 10
        assert engine.recurrent_counts("cam") == engine.recurrent_counts() == (11, 2)  # continued, restarted
    with create_engine("cpu", "lite", threads=1) as window_model:
        assert window_model.recurrent_counts() is None
    assert min(scores[1:]) > scores[0] + 0.4, scores
    assert abs(gap - scores[0]) < 0.3, (gap, scores[0])


@pytest.mark.gpu
@pytest.mark.parametrize("graphs", [True, False])
def test_cuda_carries_the_shipped_recurrent_models_state_as_the_cpu_engine_does(graphs: bool) -> None:
    """fp16 on the GPU, with and without CUDA graphs: one camera sliding for 10 frames, another batched beside
    it, against ONNX Runtime's float model on the CPU carrying its state the same way."""
    from engines.torch_backend import TorchEngine
    from tools.gpu_scene import SceneFrames, psnr

    source = SceneFrames(642, 362, seed=9)  # not a multiple of 4: the state is padded too
    noisy = [source.pair(index)[1] for index in range(14)]
    path = resolve_model("lite-recurrent")
    with TorchEngine(path, cuda_graphs=graphs) as engine, create_engine("cpu", path, int8=False) as reference:
        for start in range(10):
            windows = [noisy[start : start + 5], noisy[(start + 3) % 9 : (start + 3) % 9 + 5]]
            ours = engine.infer_batch(windows, ["cam", "other"])
            theirs = reference.infer_batch(windows, ["cam", "other"])
            assert psnr(ours[0], theirs[0]) >= 45.0 and psnr(ours[1], theirs[1]) >= 45.0, start
        assert engine.recurrent_counts("cam") == reference.recurrent_counts("cam") == (9, 1)
        assert engine.recurrent_counts("other") == reference.recurrent_counts("other")


def test_per_stream_entries_are_made_once_kept_apart_and_the_oldest_goes_at_the_bound() -> None:
    from engines.processing import MAX_STREAMS, PerStream, RecurrentState

    table = PerStream(RecurrentState)
    first = table.get("cam0")
    assert table.get("cam0") is first and table.get("cam1") is not first
    assert table.select("cam1") == [table.get("cam1")] and len(table.select()) == 2
    for index in range(2, MAX_STREAMS + 1):  # one stream more than the bound: cam0, the oldest, goes
        table.get(f"cam{index}")
    assert len(table.select()) == MAX_STREAMS and table.select("cam0") == []
    assert table.get("cam0") is not first  # made again, fresh
    table.forget("cam1")
    assert table.select("cam1") == []
    table.clear()
    assert table.select() == []
