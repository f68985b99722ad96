"""The x2 super-resolution model: bicubic before training, twice the size out, exported with its scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from engines.arch import build_model, count_macs, preset
from engines.arch_sr import UpscalingRestorer, bicubic_upsampler, cubic
from engines.onnx_cpu import OnnxCpuEngine
from tools.export_onnx import max_difference, to_onnx_bytes


def test_an_untrained_model_is_bicubic_and_doubles_the_size() -> None:
    model = build_model(preset("sr2")).eval()
    assert isinstance(model, UpscalingRestorer)
    rows, cols = torch.meshgrid(torch.arange(24.0), torch.arange(40.0), indexing="ij")
    ramp = (0.2 + 0.01 * rows + 0.005 * cols).expand(1, 15, 24, 40).contiguous()
    with torch.no_grad():
        out = model(ramp)
    assert out.shape == (1, 3, 48, 80)
    # cubic interpolation reproduces a linear ramp exactly away from the zero-padded border
    out_rows, out_cols = torch.meshgrid(torch.arange(48.0), torch.arange(80.0), indexing="ij")
    expected = 0.2 + 0.01 * ((out_rows + 0.5) / 2 - 0.5) + 0.005 * ((out_cols + 0.5) / 2 - 0.5)
    assert torch.allclose(out[0, :, 4:-4, 4:-4], expected[4:-4, 4:-4].expand(3, -1, -1), atol=1e-5)


def test_the_upsampler_matches_torch_bicubic_with_its_kernel() -> None:
    weight = bicubic_upsampler(2, 2)
    assert weight.shape == (48, 3, 6, 6)
    assert torch.allclose(weight.sum(dim=(1, 2, 3)), torch.ones(48))  # each output pixel: weights summing to one
    assert cubic(0) == 1 and cubic(1) == 0 and cubic(2) == 0


def test_it_refuses_what_it_cannot_be() -> None:
    with pytest.raises(ValueError, match="scale >= 2"):
        UpscalingRestorer(preset("lite"))


def test_exported_with_its_scale_and_run_by_the_cpu_engine(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(preset("sr2")).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))  # a residual that is not zero
    data = to_onnx_bytes(model, name="sr-test")
    metadata = {entry.key: entry.value for entry in onnx.load_from_string(data).metadata_props}
    assert metadata["streamer.scale"] == "2" and metadata["streamer.pad_multiple"] == "2"
    assert max_difference(model, data, 36, 52) < 1e-4
    path = tmp_path / "sr-test.onnx"
    path.write_bytes(data)
    engine = OnnxCpuEngine(path, threads=1)
    engine.activate()
    try:
        frames = [np.random.default_rng(seed).integers(0, 255, (50, 82, 3), np.uint8) for seed in range(5)]
        restored = engine.infer(frames)  # odd-sized blocks: padded to the model's multiple, cropped back
    finally:
        engine.deactivate()
    assert engine.info.scale == 2 and restored.shape == (100, 164, 3) and restored.dtype == np.uint8
    assert count_macs(model, 180, 320) > 0


@pytest.mark.parametrize("backend", ["onnxruntime-int8", "torch"])
def test_the_shipped_upscaler_beats_bicubic_as_every_backend_runs_it(backend: str) -> None:
    """``lite-sr2`` on the test scene (moving houses, hills, a car) made 2x smaller: the int8 twin (the CPU engine's
    default) and the PyTorch backend (the GPU fallback, here on the CPU) both give twice the size, close to ONNX
    Runtime's float output, and closer to the full-size scene than swscale's bicubic."""
    import av

    from engines import create_engine, resolve_model
    from engines.torch_backend import TorchEngine
    from tests.media import clean_frames

    large = clean_frames(320, 192, 5)
    small = [av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(160, 96, interpolation="AREA").to_ndarray()
             for frame in large]
    bicubic = av.VideoFrame.from_ndarray(small[2], format="rgb24").reformat(320, 192, interpolation="BICUBIC")

    def psnr(image: np.ndarray) -> float:
        return float(10 * np.log10(255**2 / np.mean((image.astype(np.float64) - large[2]) ** 2)))

    engine = (create_engine("cpu", "lite-sr2", threads=2) if backend != "torch"
              else TorchEngine(resolve_model("lite-sr2"), device="cpu"))
    with create_engine("cpu", "lite-sr2", threads=2, int8=False) as floating, engine:
        assert engine.info.scale == 2 and engine.info.precision == ("int8" if backend != "torch" else "float")
        expected, actual = floating.infer(small), engine.infer(small)
    assert actual.shape == (192, 320, 3) and actual.dtype == np.uint8
    rms = float(np.sqrt(np.mean((expected.astype(np.float64) - actual) ** 2)))
    assert rms < (1.5 if backend != "torch" else 0.1), f"{backend} differs from ONNX Runtime float by {rms:.2f} RMS"
    assert psnr(actual) > psnr(bicubic.to_ndarray()) + 1.0  # measured: +1.9 dB
