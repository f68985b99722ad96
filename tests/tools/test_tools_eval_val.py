"""tools/eval.py end to end on tiny synthetic clips: val mode, held-out mode, FFmpeg filter and yardstick rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic_media import export_tiny_model, moving_frames, write_clip, write_sequence

from tools import degrade, yardstick
from tools import eval as evaluate


def make_clips(folder: Path) -> Path:
    folder.mkdir()
    write_clip(folder / "video.mp4", moving_frames(12, 64, 96, seed=1))
    write_sequence(folder / "sequence", moving_frames(10, 64, 96, seed=2))
    return folder


def test_eval_runs_models_filters_and_yardsticks_on_val_clips(tmp_path: Path) -> None:
    clips = make_clips(tmp_path / "val")
    _, tiny = export_tiny_model(tmp_path, causal=False, weight_std=0.02)
    ffdnet = tmp_path / "ffdnet.onnx"
    yardstick.export(yardstick.FFDNetColor(), ffdnet)
    out = tmp_path / "out"
    arguments = f"--clips {clips} --model tiny={tiny} --yardstick ffdnet={ffdnet} --filters hqdn3d"
    arguments += " --degradations sigma15 noise_crf30 --frames 9 --tune-frames 9 --bm3d-frames 1"
    arguments += f" --yardstick-tune-frames 1 --size 96x64 --threads 1 --out-dir {out}"
    evaluate.main(arguments.split())
    summary = json.loads((out / "results.json").read_text())
    assert summary["clips"] == ["sequence", "video"]
    sigma, combined = summary["results"]["sigma15"], summary["results"]["noise_crf30"]
    assert list(sigma) == ["input", "hqdn3d", "tiny", "bm3d", "ffdnet"]
    assert list(combined) == ["input", "hqdn3d", "tiny", "ffdnet"]  # bm3d only where sigma is known
    assert sigma["ffdnet"]["setting"] == "sigma=15 (true sigma)"
    assert "oracle" in combined["ffdnet"]["setting"]
    assert sigma["bm3d"]["frames"] == 2 and sigma["tiny"]["frames"] == 18
    for rows in (sigma, combined):
        assert all(len(row["psnr"]) == 2 and all(np.isfinite(row["psnr"])) for row in rows.values())
    assert sigma["bm3d"]["psnr"][0] > sigma["input"]["psnr"][0]  # told the true sigma, BM3D denoises
    table = (out / "results.md").read_text()
    assert "val clips (scenes never trained on)" in table
    bm3d_row = next(line for line in table.splitlines() if line.startswith("| bm3d "))
    assert "| - |" in bm3d_row  # one frame per clip: no flicker


def test_held_out_takes_the_tail_and_val_the_first_frames(tmp_path: Path) -> None:
    clips = make_clips(tmp_path / "clips")
    common = ["--clips", str(clips), "--frames", "3", "--out-dir", str(tmp_path)]
    names, firsts = evaluate.read_cleans(evaluate.parse_args(common), (96, 64))
    _, tails = evaluate.read_cleans(
        evaluate.parse_args([*common, "--held-out", "--train-fraction", "0.5"]), (96, 64)
    )
    video = names.index(clips / "video.mp4")
    np.testing.assert_array_equal(firsts[video], degrade.read_clip(clips / "video.mp4", 0, 3, (96, 64)))
    np.testing.assert_array_equal(tails[video], degrade.read_clip(clips / "video.mp4", 6, 9, (96, 64)))


def test_missing_val_folder_names_the_path_and_clips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluate, "MEDIA", tmp_path / "media")
    with pytest.raises(SystemExit, match=r"media/val does not exist; pass --clips"):
        evaluate.main(["--out-dir", str(tmp_path / "out")])
