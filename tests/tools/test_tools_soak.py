"""A short soak: one stream, two viewers (ffmpeg/TCP, gst/UDP), its camera killed and brought back once."""

from __future__ import annotations

import json
from pathlib import Path

from tools.live_peers import demo_clip
from tools.soak import growth, main


def test_soak_samples_growth_reconnects_and_viewer_rates(real_peers: None, tmp_path: Path) -> None:
    clip = demo_clip(320, 176, 25, 5.0, 400, cache=tmp_path)
    out = tmp_path / "soak.json"
    main(["--minutes", "0.2", "--streams", "1", "--viewers", "2", "--engine", "passthrough", "--width", "320",
          "--height", "176", "--clip", str(clip), "--sample", "1", "--warmup", "1", "--camera-restart-every", "4",
          "--camera-down", "0.5", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["streamer_alive"] and result["samples"] >= 5
    assert result["rss_mb"]["first"] > 0 and result["open_fds"]["max"] > 0
    assert result["camera_restarts"] >= 1 and result["reconnects"]["s0"] >= 1
    assert all(recovery is not None for recovery in result["camera_recovery_s"])
    assert [viewer["kind"] for viewer in result["viewers"]] == ["ffmpeg/tcp", "gst/udp"]
    tcp, udp = (viewer["mean_fps"] for viewer in result["viewers"])
    assert tcp > 5 and udp > 5
    assert abs(tcp - udp) < 3, "both viewers lost the same outages (ffmpeg must not fill gaps with repeats)"


def test_growth_compares_the_first_and_last_windows() -> None:
    samples = [(float(t), 100.0 + t) for t in range(0, 101, 10)]
    assert growth(samples, 20) == {"first": 110.0, "last": 190.0, "growth": 80.0, "max": 200.0}
