"""A real Prometheus scrapes a running streamer: ``promtool check metrics`` passes on /metrics, and every
PromQL query of the Grafana dashboard (configs/grafana/streamer.json) returns data from it."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from streamer.app import StreamerApp
from tests.conftest import HEIGHT, WIDTH
from tests.peers.processes import FrameCapture, start_viewer
from tests.peers.prometheus import PROMETHEUS, PROMTOOL, PrometheusServer, promtool_check_metrics
from tests.streamer.app_harness import app_config, get, http_port, running_app

DASHBOARD = Path(__file__).resolve().parents[2] / "configs" / "grafana" / "streamer.json"
CAMERA = "cam"

pytestmark = pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None, reason="needs prometheus and promtool")


def dashboard_queries(dashboard: dict[str, Any], camera: str, job: str) -> dict[str, str]:
    """Every panel target's PromQL, keyed by "panel title / refId", with the template variables filled in."""
    substitutions = {"$__rate_interval": "10s", "$camera": camera, "$job": job}
    queries = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in substitutions.items():
                expr = expr.replace(variable, value)
            if "$" in expr:
                raise AssertionError(f"unknown template variable in {panel['title']!r}: {expr}")
            queries[f"{panel['title']} / {target['refId']}"] = expr
    return queries


def has_data(rows: list[dict[str, Any]]) -> bool:
    """At least one sample with a finite value (a histogram quantile of no observations is NaN)."""
    return any(math.isfinite(float(row["value"][1])) for row in rows)


def empty_queries(prometheus: PrometheusServer, queries: dict[str, str]) -> dict[str, str]:
    return {name: expr for name, expr in queries.items() if not has_data(prometheus.query(expr))}


def test_dashboard_lists_its_variables_and_every_panel_has_a_query() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names = [variable["name"] for variable in dashboard["templating"]["list"]]
    assert names == ["job", "camera"]
    assert all(panel["targets"] for panel in dashboard["panels"])
    assert len(dashboard_queries(dashboard, ".*", ".*")) >= len(dashboard["panels"])


@pytest.mark.slow
async def test_real_prometheus_scrapes_streamer_and_every_dashboard_panel_has_data(tmp_path: Path) -> None:
    source = {"type": "demo", "width": WIDTH, "height": HEIGHT, "fps": 25}
    camera = {"name": CAMERA, "source": source, "engine": {"type": "cpu"}, "exposure": {"enabled": True}}
    app = StreamerApp(app_config([camera]))
    prometheus: PrometheusServer | None = None
    viewer: FrameCapture | None = None
    async with running_app(app):
        try:
            status, exposition = await get(http_port(app), "/metrics")
            assert status == 200
            assert await asyncio.to_thread(promtool_check_metrics, exposition) == ""
            for view in ("restored", "raw", "compare"):  # the WebRTC views' bytes are counted apart
                assert f'streamer_delivered_bytes_total{{camera="{CAMERA}",protocol="webrtc",view="{view}"}}' in exposition
            assert f'streamer_frames_restored_total{{camera="{CAMERA}",level="full",model="lite"}}' in exposition
            assert f'streamer_restore_level{{camera="{CAMERA}",level="full"}} 1.0' in exposition
            assert f'streamer_exposure_gain{{camera="{CAMERA}"}}' in exposition
            viewer = start_viewer("ffmpeg", app.rtsp_url(CAMERA), WIDTH, HEIGHT, "tcp", keep_every=1000)
            prometheus = await asyncio.to_thread(PrometheusServer(tmp_path, f"127.0.0.1:{http_port(app)}").start)
            dashboard = json.loads(DASHBOARD.read_text())
            for camera in (".*", CAMERA):
                queries = dashboard_queries(dashboard, camera, "streamer")
                missing = await wait_for_data(prometheus, queries, deadline_s=25)
                assert not missing, f"dashboard queries without data (camera={camera}): {json.dumps(missing, indent=1)}"
            up = prometheus.query('up{job="streamer"}')
            assert [row["value"][1] for row in up] == ["1"], up
            assert await asyncio.to_thread(viewer.first_frame.wait, 10), "the RTSP viewer decoded no frame"
            watched = f'rate(streamer_delivered_bytes_total{{camera="{CAMERA}",protocol="rtsp"}}[10s]) > 0'
            assert not await wait_for_data(prometheus, {"RTSP bytes out": watched}, deadline_s=10)
            # RTP/RTCP on the wire: the H.264 plus a few per cent of headers
            overhead = (f'sum(rate(streamer_rtsp_sent_bytes_total{{camera="{CAMERA}"}}[10s])) / '
                        f'sum(rate(streamer_delivered_bytes_total{{camera="{CAMERA}",protocol="rtsp"}}[10s]))')
            ratio = float(prometheus.query(overhead)[0]["value"][1])
            assert 1.0 < ratio < 1.15, ratio
        finally:
            if viewer is not None:
                viewer.stop()
            if prometheus is not None:
                prometheus.stop()


async def wait_for_data(prometheus: PrometheusServer, queries: dict[str, str], deadline_s: float) -> dict[str, str]:
    """Re-run the queries until each has returned data once, or the deadline passes: those that never did."""
    deadline = time.monotonic() + deadline_s
    pending = dict(queries)
    while pending and time.monotonic() < deadline:
        pending = await asyncio.to_thread(empty_queries, prometheus, pending)
        if pending:
            await asyncio.sleep(0.5)
    return pending
