"""Long-run evaluation through the engine: spans of per-frame PSNR, one stream per clip, a PNG grid per run."""

from __future__ import annotations

import json
from pathlib import Path

import av
from synthetic_media import moving_frames, write_clip

from tests.engines.test_recurrent import export_recurrent_model
from tools import eval_stream


def test_span_means_cover_every_output_frame_once() -> None:
    scores = [float(value) for value in range(10)]
    assert eval_stream.span_means(scores, [3, 6]) == {"0-3": 1.0, "3-6": 4.0, "6-10": 7.5}
    assert eval_stream.span_means(scores[:4], [3, 6]) == {"0-3": 1.0, "3-4": 3.0}


def test_streams_each_clip_through_each_model_and_saves_the_last_frames(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "scene.mp4", moving_frames(14, 48, 64, seed=5))
    recurrent = export_recurrent_model(tmp_path, name="rec", weight_std=0.05)
    eval_stream.main([
        "--model", "lite", "--model", str(recurrent), "--clips", str(clip), "--frames", "12", "--spans", "4",
        "--degradations", "sigma25", "--size", "64x48", "--threads", "1", "--float", "--out-dir", str(tmp_path / "out"),
    ])  # fmt: skip
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = results["scene/sigma25"]
    assert set(rows) == {"lite", str(recurrent)}
    assert set(rows["lite"]) == {"0-4", "4-8", "all"}  # 12 frames, window 5: 8 restored
    for model in rows.values():
        assert abs((model["0-4"] + model["4-8"]) / 2 - model["all"]) < 1e-9 and 10 < model["all"] < 60
    with av.open(str(tmp_path / "out" / "scene_sigma25.png")) as grid:
        frame = next(grid.decode(video=0))
    assert (frame.width, frame.height) == (128, 96)  # clean | degraded over lite | rec
