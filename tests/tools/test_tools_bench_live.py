"""A short live benchmark run end to end: replay camera -> streamer (passthrough) -> viewers, relay beside."""

from __future__ import annotations

import json
from pathlib import Path

from tools.bench_live import main
from tools.live_peers import demo_clip


def test_bench_live_measures_fps_latency_and_cpu(real_peers: None, tmp_path: Path) -> None:
    clip = demo_clip(320, 176, 25, 5.0, 400, cache=tmp_path)
    out = tmp_path / "bench.json"
    assert main(["--engine", "passthrough", "--width", "320", "--height", "176", "--clip", str(clip),
                 "--seconds", "4", "--warmup", "3", "--relay-baseline", "--json", str(out),
                 "--log", str(tmp_path / "streamer.log"), "--exposure"]) == 0
    result = json.loads(out.read_text())
    assert result["viewer_fps"] > 15 and result["camera_direct_viewer_fps"] > 15
    assert result["frames_matched"] > 50
    assert 0 < result["camera_direct_latency_ms_p50"] < result["latency_ms_p50"] < 2000
    assert 0 < result["added_latency_ms_p50"] < 2000
    assert result["cpu_percent"] > 0 and result["rss_mb_max"] > 0 and result["camera_cpu_percent"] >= 0
    assert result["ffmpeg_relay_cpu_percent"] > 0
    assert result["ladder_moves"] == 0 and result["ladder_last_moves"] == []  # passthrough: nothing to move
    log = (tmp_path / "streamer.log").read_text()
    assert "health and metrics at" in log  # the streamer's own log, kept
    assert "exposure correction on" in log  # --exposure reached the streamer
