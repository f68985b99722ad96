"""The FFDNet-class yardstick: model shape and size, a resumable 3-step training, ONNX export parity, BM3D."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_media import moving_frames, write_clip, write_png, write_sequence

from tools import degrade, yardstick
from tools.eval import psnr
from tools.yardsticks import OnnxYardstick, bm3d_restore


def test_model_is_ffdnet_sized_and_keeps_the_frame_shape() -> None:
    model = yardstick.FFDNetColor()
    assert yardstick.parameter_count(model) == 853_524  # 13->96, 10 x 96->96, 96->12, skip 13->12 (3x3)
    assert round(yardstick.macs_per_frame(model, 640, 360) / 1e9, 1) == 49.1
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    noisy = torch.rand(2, 3, 20, 34)
    with torch.no_grad():
        out = model(noisy, torch.full((2, 1, 1, 1), 0.1))
    assert out.shape == noisy.shape and 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_a_checkpoint_of_the_earlier_design_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    weights = {k: v for k, v in yardstick.FFDNetColor().state_dict().items() if not k.startswith("skip.")}
    torch.save({"model": weights, "step": 10}, tmp_path / "old.pt")
    with pytest.raises(SystemExit, match="earlier yardstick design"):
        yardstick.load_checkpoint(tmp_path / "old.pt")


def test_clip_size_is_the_smaller_of_360p_and_half_native() -> None:
    assert yardstick.clip_size((1920, 1080)) == (640, 360)
    assert yardstick.clip_size((1280, 720)) == (640, 360)
    assert yardstick.clip_size((854, 480)) == (428, 240)


def test_sample_batch_noise_matches_its_sigma_map() -> None:
    image = np.full((80, 80, 3), 128, np.uint8)
    clean, noisy, sigma = yardstick.sample_batch([[image], []], 8, 64, np.random.default_rng(0))
    assert clean.shape == noisy.shape == (8, 3, 64, 64) and sigma.shape == (8, 1, 1, 1)
    measured = (noisy - clean).flatten(1).std(dim=1)
    assert torch.allclose(measured, sigma.flatten(), atol=0.01)  # clipping is rare around grey 128
    assert float(sigma.max()) <= yardstick.MAX_SIGMA / 255


def test_three_steps_train_resume_and_export_matches_torch(tmp_path: Path) -> None:
    clips, stills, val = tmp_path / "clips", tmp_path / "stills", tmp_path / "val"
    for folder in (clips, stills, val):
        folder.mkdir()
    write_clip(clips / "a.mp4", moving_frames(4, 72, 128, seed=1))
    write_sequence(clips / "seq", moving_frames(3, 96, 96, seed=2))
    write_png(stills / "s.png", moving_frames(1, 100, 90, seed=3)[0])
    write_clip(val / "v.mp4", moving_frames(2, 360, 640, seed=4))
    out = tmp_path / "run"
    common = ["--clips", str(clips), "--stills", str(stills), "--val", str(val), "--out", str(out)]
    common += ["--batch", "2", "--crop-min", "32", "--crop-max", "40", "--log-every", "1", "--val-every", "2"]
    checkpoint = yardstick.train(yardstick.parse_args(["train", *common, "--steps", "3"]))
    assert torch.load(checkpoint)["step"] == 3
    yardstick.train(yardstick.parse_args(["train", *common, "--steps", "4"]))
    assert torch.load(checkpoint)["step"] == 4  # resumed, one more step

    onnx_path = tmp_path / "ffdnet.onnx"
    yardstick.main(["export", "--checkpoint", str(checkpoint), "--onnx", str(onnx_path)])
    frames = degrade.add_gaussian_noise(moving_frames(2, 30, 46, seed=5), 25, np.random.default_rng(0))
    ours = OnnxYardstick(onnx_path, threads=1)(frames, 25.0)[0]
    model = yardstick.load_checkpoint(checkpoint).eval()
    with torch.no_grad():
        planar = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
        theirs = model(planar, torch.full((2, 1, 1, 1), 25 / 255)).permute(0, 2, 3, 1).numpy()
    reference = degrade.to_uint8(theirs)
    assert psnr(ours, reference) >= 50.0


def test_bm3d_told_sigma_denoises_a_tiny_frame() -> None:
    clean = moving_frames(1, 32, 48, seed=6)
    noisy = degrade.add_gaussian_noise(clean, 25, np.random.default_rng(0))
    restored, seconds = bm3d_restore(noisy, 25.0)
    assert restored.shape == clean.shape and restored.dtype == np.uint8 and seconds > 0
    assert psnr(restored, clean) > psnr(noisy, clean) + 3.0
