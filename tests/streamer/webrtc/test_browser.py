"""The viewer page and WHIP publishing in a real browser (headless Chromium) against a streamer, both in a
private network namespace (loopback only), see tests/peers/browser_page.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.peers.processes import ROOT
from tools.browser import missing_tools, private_network


def run_browser(tmp_path: Path, *arguments: str) -> dict[str, Any]:
    if missing := missing_tools():
        pytest.fail(f"browser peers missing (run setup.sh --dev): {missing}")
    out = tmp_path / "report.json"
    command = [sys.executable, "-m", "tests.peers.browser_page", "--out", str(out), *arguments]
    result = subprocess.run(private_network(command), cwd=ROOT, capture_output=True, timeout=170)
    assert result.returncode == 0 and out.exists(), result.stderr.decode()[-3000:]
    report: dict[str, Any] = json.loads(out.read_text())
    return report


@pytest.mark.slow
def test_the_page_plays_the_restored_stream_and_the_compare_view(tmp_path: Path) -> None:
    report = run_browser(tmp_path, "--screenshot", str(tmp_path / "compare.png"))
    views = {view["view"]: view for view in report["views"]}
    restored, split = views["restored"], views["split"]
    assert (restored["width"], restored["height"]) == (320, 180)
    assert (split["width"], split["height"]) == (640, 180)  # raw | restored, side by side in one picture
    assert restored["codec"] == split["codec"] == "video/H264"
    # every picture the stream made in 5 s is shown (the stream's own rate is the camera's on a quiet box)
    assert restored["shown"] >= 0.95 * restored["published"] - 2, restored
    # the compare view is encoded apart and skips frames while its encoder is busy: most of them are shown
    assert split["shown"] >= 0.5 * split["published"], split
    assert (tmp_path / "compare.png").stat().st_size > 10000


@pytest.mark.slow
@pytest.mark.usefixtures("real_peers")
def test_the_browsers_camera_published_over_whip_reaches_an_rtsp_viewer(tmp_path: Path) -> None:
    whip = run_browser(tmp_path, "--whip")["whip"]
    assert whip["status"] == 201
    assert (whip["width"], whip["height"]) == (640, 360)  # what the page asked of the fake camera
    assert whip["frames"] == 25, whip["viewer_errors"]


@pytest.mark.slow
@pytest.mark.usefixtures("real_peers")
def test_two_browsers_and_an_rtsp_viewer_keep_the_cameras_rate_together(tmp_path: Path) -> None:
    report = run_browser(tmp_path, "--together", "2", "--seconds", "5")["together"]
    assert report["viewers"] >= 3, report  # two WebRTC sessions (one per browser) and the RTSP viewer
    assert report["camera"] >= 0.8 * 25 * report["seconds"], report  # the camera itself kept (near) its rate
    shown = {"browser 1": report["browsers"][0], "browser 2": report["browsers"][1], "rtsp": report["rtsp"]}
    for viewer, count in shown.items():
        assert count >= 0.95 * report["camera"] - 2, f"{viewer}: {count} of {report['camera']} in {report['seconds']:.1f} s"
    assert report["dropped"] == 0, report
