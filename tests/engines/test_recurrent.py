"""A recurrent model on the CPU engine: each stream's state goes back in, only to the window after it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from engines import create_engine
from engines.arch import build_model, preset
from engines.processing import pack_window
from tools import export_onnx


def export_recurrent_model(folder: Path, name: str = "tiny", weight_std: float = 0.2) -> Path:
    """A random-weight recurrent ``tiny`` model (state paths non-zero) as ``folder/NAME.onnx``."""
    torch.manual_seed(0)
    model = build_model(preset("tiny", recurrent=True)).eval()
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


def test_cpu_engine_feeds_each_streams_previous_output_back_and_resets_after_a_gap(tmp_path: Path) -> None:
    path = export_recurrent_model(tmp_path)
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


def test_gpu_backends_refuse_a_recurrent_model_by_name_and_auto_falls_back_to_the_cpu(tmp_path: Path) -> None:
    from engines import EngineError, activate_engine
    from engines.tensorrt_backend import TensorRTEngine
    from engines.torch_backend import TorchEngine

    path = export_recurrent_model(tmp_path)
    for backend in (TorchEngine, TensorRTEngine):
        try:
            backend(path)
        except EngineError as error:
            assert "recurrent" in str(error) and "cpu backend" in str(error)
        else:
            raise AssertionError(f"{backend.__name__} took a recurrent model")
    engine = activate_engine("auto", model=str(path), threads=1)
    try:
        assert engine.backend == "cpu" and engine.info.recurrent
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
