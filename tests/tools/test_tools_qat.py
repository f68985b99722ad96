"""Quantisation-aware training simulates what ONNX Runtime's int8 model computes, and comes off cleanly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from synthetic_media import export_tiny_model, moving_frames, write_clip

from engines import create_engine
from tools import quantize
from tools.qat import QuantSimulation, fake_quantize_weight, plain_state_dict


def run_onnx(path: Path, frames: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["restored"], {"frames": frames})[0])


def tiny_model_and_windows(
    tmp_path: Path, seed: int, detail_width: int = 0, context_width: int = 0
) -> tuple[Any, Path, Path, list[np.ndarray]]:
    """A random tiny model (eval mode), its float ONNX file, a synthetic clip and 4 calibration windows from it."""
    model, float_path = export_tiny_model(
        tmp_path, causal=False, weight_std=0.05, detail_width=detail_width, context_width=context_width
    )
    model.eval()
    clip = write_clip(tmp_path / "clip.mp4", moving_frames(30, 64, 96, seed=seed))
    info = create_engine("cpu", float_path, int8=False).info
    return model, float_path, clip, quantize.calibration_windows([clip], 4, info, (96, 64))


@pytest.mark.parametrize(
    ("detail_width", "context_width"),
    [(0, 0), (8, 0), (0, 8)],
    ids=["trunk", "with-detail-path", "with-context-path"],
)
def test_simulation_matches_the_onnx_runtime_int8_model(
    tmp_path: Path, detail_width: int, context_width: int
) -> None:
    model, float_path, clip, windows = tiny_model_and_windows(
        tmp_path, seed=3, detail_width=detail_width, context_width=context_width
    )
    int8_path = tmp_path / "tiny.int8.onnx"
    quantize.quantize(float_path, int8_path, windows)

    simulation = QuantSimulation(model)
    simulation.calibrate(model, [torch.from_numpy(window) for window in windows])
    with torch.no_grad():
        simulated = model(torch.from_numpy(windows[0])).numpy()
    onnx_int8 = run_onnx(int8_path, windows[0])
    onnx_float = run_onnx(float_path, windows[0])
    float_error = np.abs(onnx_float - onnx_int8).mean()
    assert float_error > 1e-4  # int8 rounding is visible at all
    # the detail path rounds more tensors (concatenations whose rounding ties can fall either way)
    tolerance = 0.05 if detail_width == 0 else 0.1
    assert np.abs(simulated - onnx_int8).mean() < tolerance * float_error

    # a QAT checkpoint's ranges pin the int8 model's activations, whatever the calibration windows say
    simulation.calibrate(model, [torch.from_numpy(window) for window in windows[:2]])
    pinned_path = tmp_path / "pinned.int8.onnx"
    quantize.quantize(float_path, pinned_path, windows[2:], ranges=simulation.ranges())
    with torch.no_grad():
        simulated = model(torch.from_numpy(windows[3])).numpy()
    pinned = run_onnx(pinned_path, windows[3])
    assert np.abs(simulated - pinned).mean() < tolerance * np.abs(run_onnx(float_path, windows[3]) - pinned).mean()

    # the command line takes the ranges from a training checkpoint, and refuses one trained without --qat
    checkpoint = tmp_path / "qat.pt"
    torch.save({"qat_ranges": simulation.ranges()}, checkpoint)
    command = ["--model", str(float_path), "--clips", str(clip), "--windows", "2", "--size", "96x64", "--threads", "1"]
    quantize.main([*command, "--out", str(tmp_path / "cli.int8.onnx"), "--ranges-from", str(checkpoint)])
    np.testing.assert_allclose(run_onnx(tmp_path / "cli.int8.onnx", windows[3]), pinned, atol=1e-6)
    torch.save({"qat_ranges": None}, checkpoint)
    with pytest.raises(SystemExit, match="not trained with --qat"):
        quantize.main([*command, "--ranges-from", str(checkpoint)])

    simulation.remove()
    simulation.remove()  # idempotent
    with torch.no_grad():
        restored = model(torch.from_numpy(windows[0])).numpy()
    np.testing.assert_allclose(restored, onnx_float, atol=1e-5)


def test_fixed_residual_range_saturates_as_the_onnx_runtime_int8_model_does(tmp_path: Path) -> None:
    model, float_path, clip, windows = tiny_model_and_windows(tmp_path, seed=5)
    calibrated = QuantSimulation(model)
    calibrated.calibrate(model, [torch.from_numpy(window) for window in windows])
    residual = calibrated.ranges()[-1]
    calibrated.remove()
    bound = 0.5 * max(-residual["low"], residual["high"])  # narrower than calibrated: the extremes saturate

    int8_path = tmp_path / "residual.int8.onnx"
    quantize.main(["--model", str(float_path), "--clips", str(clip), "--windows", "4", "--size", "96x64",
                   "--threads", "1", "--out", str(int8_path), "--residual-range", str(bound)])
    simulation = QuantSimulation(model, residual_range=bound)
    simulation.calibrate(model, [torch.from_numpy(window) for window in windows])
    assert simulation.ranges()[-1] == {"low": -bound, "high": bound}  # calibration leaves it alone
    batch = np.concatenate(windows)  # the window with the calibrated extreme is among them
    with torch.no_grad():
        simulated = model(torch.from_numpy(batch)).numpy()
    onnx_int8 = np.concatenate([run_onnx(int8_path, window) for window in windows])
    float_error = np.abs(np.concatenate([run_onnx(float_path, window) for window in windows]) - onnx_int8).mean()
    assert np.abs(simulated - onnx_int8).mean() < 0.05 * float_error
    with pytest.raises(ValueError, match="differs from the fixed range"):
        simulation.load_ranges([*simulation.ranges()[:-1], {"low": -1.0, "high": 1.0}])
    with pytest.raises(ValueError, match="positive"):
        QuantSimulation(model, residual_range=0.0)
    with pytest.raises(ValueError, match="positive"):
        quantize.quantize(float_path, tmp_path / "zero.int8.onnx", windows, residual_range=0.0)
    with pytest.raises(SystemExit):
        quantize.main(["--model", str(float_path), "--clips", str(clip), "--residual-range", "0.4", "--float-output-conv"])
    simulation.remove()


def test_weights_round_per_output_channel_and_checkpoints_keep_plain_names(tmp_path: Path) -> None:
    weight = torch.randn(4, 3, 3, 3) * torch.tensor([1.0, 0.1, 0.01, 5.0])[:, None, None, None]
    rounded = fake_quantize_weight(weight)
    for channel in range(4):
        step = weight[channel].abs().max() / 127
        assert torch.all((rounded[channel] - weight[channel]).abs() <= step / 2 + 1e-7)
        assert torch.allclose(rounded[channel] / step, torch.round(rounded[channel] / step), atol=1e-4)

    model, _ = export_tiny_model(tmp_path, causal=True, weight_std=0.05)
    names = set(model.state_dict())
    QuantSimulation(model)
    assert set(plain_state_dict(model)) == names


def test_every_simulated_activation_has_its_onnx_tensor(tmp_path: Path) -> None:
    """Both fusion layouts: a 1x1 fusion conv (lite, tiny: exported as a strided conv on the frames) and a 3x3
    one after a per-frame unshuffle (base); a detail path and a context path."""
    from engines.arch import build_model, preset
    from tools import export_onnx

    for name in ("tiny", "base", "detail", "fine-context"):
        model = build_model(preset(name))
        checkpoint = tmp_path / f"{name}.pt"
        torch.save({"config": model.config.to_dict(), "model": model.state_dict()}, checkpoint)
        exported = tmp_path / f"{name}.onnx"
        export_onnx.main(["--checkpoint", str(checkpoint), "--out", str(exported), "--check-size", "24", "40"])
        tensors = quantize.activation_tensors(exported)
        detail = 0 if model.detail is None else model.config.detail_depth + 5  # conv inputs, inlet output, output
        # a context path: its conv inputs, its decoder's first output, the trunk's middle output, its output
        context = 0 if model.context is None else model.config.context_depth + 5 + 3
        assert len(tensors) == len(QuantSimulation(model).activations) == model.config.depth + 2 + detail + context
        # the context path reads the trunk's first features, which the trunk's second convolution reads too
        assert len(set(tensors)) == len(tensors) - (model.context is not None)
