"""tools/eval_exposure.py end to end on a tiny synthetic clip: dark input, a model, FFmpeg's normalize and the
streamer's exposure correction scored against the clean frames."""

from __future__ import annotations

import json
from pathlib import Path

from synthetic_media import export_tiny_model, moving_frames, write_clip

from tools import eval_exposure


def test_a_dark_clip_is_scored_for_every_method(tmp_path: Path) -> None:
    clips = tmp_path / "val"
    clips.mkdir()
    write_clip(clips / "video.mp4", moving_frames(12, 64, 96, seed=1))
    _, tiny = export_tiny_model(tmp_path, causal=False, weight_std=0.02)
    out = tmp_path / "exposure.json"
    eval_exposure.main(f"--clips {clips} --model tiny={tiny} --frames 10 --size 96x64 --threads 1 "
                       f"--darkening 0.3:1.3 --exposure {{\"max_gain\":32}} --out {out}".split())
    report = json.loads(out.read_text())["0.3:1.3"]
    assert list(report) == ["mean", "video"]
    mean = report["mean"]
    assert list(mean) == ["input", "input+normalize", "input+exposure", "tiny", "tiny+normalize", "tiny+exposure"]
    # the dark input is far from the clean frames; brightening brings it closer, in brightness and in PSNR
    assert mean["input"]["brightness"] < 0.4 * mean["input"]["clean_brightness"]
    assert mean["input+exposure"]["brightness"] > 2 * mean["input"]["brightness"]
    assert mean["input+exposure"]["psnr"] > mean["input"]["psnr"] + 3
