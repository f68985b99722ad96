"""End to end against real peers: GStreamer RTSP camera -> ``streamer run`` -> ffmpeg / GStreamer viewers."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.conftest import FPS, HEIGHT, WIDTH
from tests.media import best_match_psnr
from tests.peers.processes import GstCamera, StreamerProcess, start_viewer

WATCH_S = 10.0


def watch(captures: list, seconds: float) -> tuple[float, float]:
    """Wait for every viewer's first frame, skip one second of start-up burst, then watch ``seconds``."""
    for capture in captures:
        assert capture.first_frame.wait(30), "viewer decoded no frame within 30 s"
    start = time.monotonic() + 1.0
    end = start + seconds
    while time.monotonic() < end + 0.5:  # let the last frames of the window arrive
        for capture in captures:
            assert capture.process.poll() is None, "a viewer exited early"
        time.sleep(0.25)
    return start, end


@pytest.mark.slow
def test_restored_stream_reaches_both_viewers_and_is_cleaner(noisy_camera: GstCamera, clips: dict) -> None:
    streamer = StreamerProcess(noisy_camera.url, "--engine", "cpu").start()
    direct = start_viewer("ffmpeg", noisy_camera.url, WIDTH, HEIGHT, "tcp", keep_every=10)
    viewers = [
        start_viewer("ffmpeg", streamer.url(), WIDTH, HEIGHT, "tcp", keep_every=10),
        start_viewer("gst", streamer.url(), WIDTH, HEIGHT, "udp", keep_every=10),
    ]
    try:
        start, end = watch([*viewers, direct], WATCH_S)
        expected = FPS * WATCH_S
        for capture in viewers:
            count = capture.count_between(start, end)
            assert count >= 0.95 * expected, f"viewer decoded {count} of {expected:.0f} frames"
            assert capture.frames[-1].shape == (HEIGHT, WIDTH, 3)
        metrics = streamer.metrics()
        restored = sum(value for key, value in metrics.items()
                       if key.startswith('streamer_frames_restored_total{camera="restored",'))
        out = metrics['streamer_frames_out_total{camera="restored"}']
        assert restored >= 0.5 * out, f"only {restored} of {out} frames went through the model"
        clean = clips["clean_frames"]
        noisy_psnr = np.mean([best_match_psnr(frame, clean) for frame in direct.frames[-20:]])
        for capture in viewers:
            restored_psnr = np.mean([best_match_psnr(frame, clean) for frame in capture.frames[-20:]])
            assert restored_psnr > noisy_psnr + 2.0, f"restored {restored_psnr:.2f} dB vs input {noisy_psnr:.2f} dB"
    finally:
        for capture in [*viewers, direct]:
            capture.stop()
        streamer.kill()


@pytest.mark.slow
def test_camera_restarts_are_survived_by_pipeline_and_viewers(camera: GstCamera) -> None:
    streamer = StreamerProcess(camera.url, "--engine", "passthrough").start()
    viewers = [
        start_viewer("ffmpeg", streamer.url(), WIDTH, HEIGHT, "udp"),
        start_viewer("gst", streamer.url(), WIDTH, HEIGHT, "tcp"),
    ]
    try:
        for capture in viewers:
            assert capture.first_frame.wait(30)
        for restart in range(3):
            camera.kill()
            time.sleep(0.5)  # the camera stays dead for a moment (a real outage)
            camera.start()
            streamer.wait_metric('streamer_source_connected{camera="restored"}', 1, 20)
            streamer.wait_metric('streamer_source_reconnects_total{camera="restored"}', restart + 1, 20)
            before = [len(capture.arrivals) for capture in viewers]
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(
                len(capture.arrivals) < count + 25 for capture, count in zip(viewers, before, strict=True)
            ):
                time.sleep(0.1)
            for capture, count in zip(viewers, before, strict=True):
                assert capture.process.poll() is None, "viewer disconnected"
                assert len(capture.arrivals) >= count + 25, "viewer got no frames after the camera came back"
        assert streamer.process is not None and streamer.process.poll() is None
    finally:
        for capture in viewers:
            capture.stop()
        streamer.kill()


@pytest.mark.slow
def test_resolution_change_mid_stream(camera: GstCamera, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import urllib.request

    from tests.media import clean_frames, write_lossless

    def streams() -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{streamer.http_port}/api/streams", timeout=5) as response:
            return json.loads(response.read())["streams"][0]

    streamer = StreamerProcess(camera.url, "--engine", "cpu").start()
    viewer = start_viewer("ffmpeg", streamer.url(), WIDTH, HEIGHT, "tcp")
    try:
        assert viewer.first_frame.wait(30)
        assert streams()["size"] == [WIDTH, HEIGHT]
        camera.kill()
        small = write_lossless(tmp_path / "small.mkv", clean_frames(256, 144, 50))
        camera.clip, camera.width, camera.height = small, 256, 144
        camera.start()
        deadline = time.monotonic() + 20
        while streams()["size"] != [256, 144] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert streams()["size"] == [256, 144], "the restored stream should follow the camera's new size"
        count = len(viewer.arrivals)
        deadline = time.monotonic() + 15
        while len(viewer.arrivals) < count + 25 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(viewer.arrivals) >= count + 25, "the viewer should keep decoding after the size change"
    finally:
        viewer.stop()
        streamer.kill()
