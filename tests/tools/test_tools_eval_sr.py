"""tools/eval_sr.py end to end on a tiny synthetic clip: swscale's scalers, an upscaling model and a model that
restores at the low resolution, scored against the full-size frames."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from synthetic_media import export_tiny_model, moving_frames, write_clip

from engines.arch import build_model, preset
from tools import eval_sr
from tools.export_onnx import to_onnx_bytes


def test_every_case_scores_scalers_and_models(tmp_path: Path) -> None:
    clips = tmp_path / "val"
    clips.mkdir()
    write_clip(clips / "video.mp4", moving_frames(8, 64, 96, seed=1))
    _, tiny = export_tiny_model(tmp_path, causal=False, weight_std=0.02)
    torch.manual_seed(0)
    upscaler = tmp_path / "sr.onnx"
    upscaler.write_bytes(to_onnx_bytes(build_model(preset("sr2")).eval(), name="sr"))  # untrained: bicubic
    out = tmp_path / "sr.json"
    eval_sr.main(f"--clips {clips} --model sr={upscaler} --model tiny={tiny} --frames 6 --size 96x64 --threads 1 "
                 f"--out {out}".split())
    report = json.loads(out.read_text())
    assert list(report) == list(eval_sr.CASES)
    for case in eval_sr.CASES:
        mean = report[case]["mean"]
        assert list(mean) == ["bicubic", "lanczos", "sr", "tiny+bicubic"]
        assert mean["sr"]["ms"] > 0 and mean["bicubic"]["psnr"] > 12
        # the untrained upscaler is bicubic (its own kernel, zero-padded at the border): close to swscale's
        assert abs(mean["sr"]["psnr"] - mean["bicubic"]["psnr"]) < 1.5
