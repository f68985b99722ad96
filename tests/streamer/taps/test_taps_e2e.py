"""The taps of a running service: the demo camera's raw and restored frames arrive at the camera's rate,
with their metadata, and the tap counters are in /metrics. Also ``streamer run --taps``'s defaults."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from streamer.app import StreamerApp
from streamer.cli import build_parser, config_from_args
from streamer.config import DEFAULT_TAP_ENDPOINT
from streamer.taps.client import TapClient, TapFrame
from tests.media import psnr
from tests.streamer.app_harness import DEMO, app_config, get, rtsp_viewer, running_app


async def test_restored_and_raw_taps_of_the_demo_camera(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/taps.sock"
    taps = {"enabled": True, "endpoint": endpoint, "send_hwm": 64,
            "points": [{"point": "raw", "format": "jpeg", "width": 160}, {"point": "restored"}]}
    config = app_config([{"name": "cam", "source": DEMO, "engine": {"type": "passthrough"}, "taps": taps}])
    app = StreamerApp(config)
    with TapClient(endpoint, receive_hwm=64) as client:
        async with running_app(app, stop_must_finish=False):
            frames: list[TapFrame] = []

            async def collect(until: Any) -> None:
                async for frame in client.aiter():
                    frames.append(frame)
                    if until():
                        return

            await asyncio.wait_for(collect(lambda: len(frames) >= 4), 20)  # the pipeline is up and joined
            started, first = time.monotonic(), len(frames)
            await asyncio.wait_for(collect(lambda: time.monotonic() - started >= 3.0), 20)
            window = frames[first:]
            restored = [f for f in window if f.header.tap == "restored"]
            raw = [f for f in window if f.header.tap == "raw"]
            fps = 25.0
            assert len(restored) == pytest.approx(3.0 * fps, rel=0.2), len(restored)
            assert len(raw) == pytest.approx(3.0 * fps, rel=0.2), len(raw)
            assert client.gaps == 0
            header = restored[-1].header
            assert (header.stream, header.pix_fmt, header.width) == ("cam", "rgb24", DEMO["width"])
            assert restored[-1].image.shape == (DEMO["height"], DEMO["width"], 3)
            assert raw[-1].header.pix_fmt == "jpeg" and raw[-1].image.shape[1] == 160
            seconds = [f.header.seconds for f in restored]
            assert all(later > earlier for earlier, later in itertools.pairwise(seconds))
            assert abs(time.time() - header.wallclock) < 5
            assert app.http is not None
            metrics = (await get(app.http.port, "/metrics"))[1]
            for tap in ("raw", "restored"):
                assert f'streamer_tap_messages_total{{camera="cam",tap="{tap}"}}' in metrics
                assert f'streamer_tap_dropped_total{{camera="cam",tap="{tap}"}}' in metrics


def test_run_taps_flag_enables_the_default_taps_on_every_camera() -> None:
    args = build_parser().parse_args(["run", "demo", "--taps"])
    taps = config_from_args(args, environ={}).cameras[0].taps
    assert taps.enabled and taps.endpoint == DEFAULT_TAP_ENDPOINT and taps.pattern == "pub" and taps.bind
    assert [point.point for point in taps.points] == ["raw", "restored"]
    assert not config_from_args(build_parser().parse_args(["run", "demo"]), environ={}).cameras[0].taps.enabled


def collect_taps(client: TapClient, seconds: float) -> list[TapFrame]:
    frames: list[TapFrame] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        frame = client.receive(0.2)
        if frame is not None:
            frames.append(frame)
    return frames


async def test_restored_tap_is_what_rtsp_viewers_decode(tmp_path: Path) -> None:
    """Frame for frame: each picture an RTSP viewer decodes is one restored tap frame up to codec loss (and
    not the raw one), in the same order; the raw tap (i420, the decoder's planes) is the noisy camera."""
    endpoint = f"ipc://{tmp_path}/taps.sock"
    taps = {"enabled": True, "endpoint": endpoint, "send_hwm": 256,
            "points": [{"point": "raw", "format": "i420", "queue": 64}, {"point": "restored", "queue": 64}]}
    camera = {"name": "cam", "source": DEMO, "engine": {"type": "cpu"}, "encoder": {"bitrate_kbps": 4000}, "taps": taps}
    app = StreamerApp(app_config([camera]))
    with TapClient(endpoint, receive_hwm=256) as client:
        async with running_app(app, stop_must_finish=False), rtsp_viewer(app, "cam", first_frame_s=15) as viewer:
            frames = await asyncio.to_thread(collect_taps, client, 4.0)
            viewed = list(viewer.frames[-40:-10])  # decoded while the taps were being collected
            restored = [f for f in frames if f.header.tap == "restored"]
            raw = [f for f in frames if f.header.tap == "raw"]
            assert client.gaps == 0 and len(restored) >= 50 and len(raw) >= 50
            assert raw[-1].header.pix_fmt == "i420" and raw[-1].data.shape == (DEMO["height"] * 3 // 2, DEMO["width"])
            matches = []
            for picture in viewed:
                scores = [psnr(picture, tap.image) for tap in restored]
                best = max(range(len(scores)), key=scores.__getitem__)
                raw_best = max(psnr(picture, tap.image) for tap in raw)
                assert scores[best] >= 33.0 and scores[best] > raw_best + 3.0, (scores[best], raw_best)
                matches.append(restored[best].header.seq)
            assert matches == sorted(matches) and len(set(matches)) == len(matches), matches  # in order, one each
