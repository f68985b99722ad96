"""RTSP ingest against real cameras that stall, die and come back: how soon it notices, how soon frames return."""

from __future__ import annotations

import logging
import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.config import RtspSourceConfig
from streamer.sources.backoff import ReconnectSchedule
from streamer.sources.rtsp import RtspSource
from tests.conftest import FPS, HEIGHT, WIDTH
from tests.media import read_video
from tests.peers.processes import (
    FrameCapture,
    GstCamera,
    StreamerProcess,
    free_port,
    start_viewer,
    write_camera_config,
)
from tests.peers.rtsp_proxy import InterleavedProxy

CONNECTED = 'streamer_source_connected{camera="restored"}'
RECONNECTS = 'streamer_source_reconnects_total{camera="restored"}'
KEY_INT = 5  # the camera's keyframe interval in frames (0.2 s): frames can only return at a keyframe


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_schedule_is_quick_at_first_then_stepped() -> None:
    clock = FakeClock()
    schedule = ReconnectSchedule(0.2, 5.0, [0.5, 1, 2, 5, 10], clock)
    pauses = []
    for _ in range(35):
        schedule.attempt()  # each attempt fails at once (connection refused)
        pause = schedule.pause()
        pauses.append(round(pause, 6))
        clock.now += pause
    assert pauses[:25] == [0.2] * 25
    assert pauses[25:32] == [0.5, 1, 2, 5, 10, 10, 10]
    schedule.lost()  # the camera came back and was lost again: quick again
    schedule.attempt()
    assert schedule.pause() == pytest.approx(0.2)


def test_schedule_counts_pauses_from_the_attempt_start() -> None:
    clock = FakeClock()
    schedule = ReconnectSchedule(0.2, 5.0, [0.5, 1, 10], clock)
    schedule.attempt()
    clock.now += 4.0  # the camera accepted the connection and never answered: open_timeout_s
    assert schedule.pause() == 0  # no extra sleep after a slow attempt
    clock.now = 100.0
    schedule.attempt()
    clock.now += 0.3
    assert schedule.pause() == pytest.approx(0.2)  # the first stepped pause, less the attempt's 0.3 s


def test_a_minute_of_a_dead_camera_costs_few_attempts() -> None:
    clock = FakeClock()
    schedule = ReconnectSchedule(0.2, 5.0, RtspSourceConfig(url="rtsp://x/y").reconnect_backoff_s, clock)
    while clock.now < 60:
        schedule.attempt()
        clock.now += schedule.pause()
    # 25 quick ones in the first 5 s, then 0.5, 1, 2, 5 and every 10 s: ~36 in the first minute,
    # then 6 a minute.
    assert schedule.attempts <= 40, schedule.attempts


def test_a_dead_camera_is_tried_often_at_first_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/cam"  # nothing listens: every attempt is refused
    config = RtspSourceConfig(url=url, reconnect_fast_s=0.2, reconnect_fast_for_s=1.0, reconnect_backoff_s=[0.5, 1])
    source = RtspSource(config, "dead")
    worker = threading.Thread(target=source._produce, daemon=True)
    with caplog.at_level(logging.DEBUG, logger="streamer.sources.rtsp"):
        started = time.monotonic()
        worker.start()
        time.sleep(3.0)
        source.stop()
        worker.join(5)
    elapsed = time.monotonic() - started
    assert not worker.is_alive()
    # ~6 quick attempts in the first second, then after 0.5, 1 and 1 s: 8-10 in 3 s.
    assert 7 <= source.stats.reconnects <= 11, (source.stats.reconnects, elapsed)
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1, "one outage's failure is logged once (a minute)"
    assert "reconnecting" in warnings[0].getMessage()


def first_arrival_after(viewer: FrameCapture, moment: float, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        later = [arrival for arrival in viewer.arrivals[-100:] if arrival > moment]
        if later:
            return later[0]
        time.sleep(0.005)
    return None


@pytest.fixture
def quick_key_camera(real_peers: None, clips: dict) -> Iterator[GstCamera]:
    camera = GstCamera(clips["clean"], WIDTH, HEIGHT, FPS, key_int=KEY_INT).start()
    yield camera
    camera.kill()


@pytest.mark.slow
def test_stalled_camera_is_noticed_within_read_timeout_and_resumes_within_a_second(
    quick_key_camera: GstCamera, tmp_path: Path
) -> None:
    camera = quick_key_camera
    assert camera.process is not None
    read_timeout_s = 2.0
    config = write_camera_config(tmp_path / "stall.yaml", camera.url, source={"read_timeout_s": read_timeout_s})
    streamer = StreamerProcess("--config", str(config), "--engine", "passthrough").start()
    viewer = start_viewer("ffmpeg", streamer.url(), WIDTH, HEIGHT, "tcp")
    try:
        assert viewer.first_frame.wait(30)
        time.sleep(1.0)
        # A stall shorter than read_timeout_s keeps the connection: frames go on as soon as it ends.
        reconnects = streamer.metrics()[RECONNECTS]
        os.kill(camera.process.pid, signal.SIGSTOP)
        time.sleep(read_timeout_s / 2)
        os.kill(camera.process.pid, signal.SIGCONT)
        resumed = time.monotonic()
        first = first_arrival_after(viewer, resumed, 5)
        assert first is not None and first - resumed < 0.5, "frames did not go on after a short stall"
        assert streamer.metrics()[RECONNECTS] == reconnects
        time.sleep(1.0)
        # A longer stall (TCP open, nothing sent) is noticed at read_timeout_s, not twice that.
        os.kill(camera.process.pid, signal.SIGSTOP)
        stalled = time.monotonic()
        while streamer.metrics()[CONNECTED] == 1 and time.monotonic() - stalled < 3 * read_timeout_s:
            time.sleep(0.05)
        noticed = time.monotonic() - stalled
        assert read_timeout_s - 0.1 <= noticed <= read_timeout_s + 0.6, f"stall noticed after {noticed:.2f} s"
        assert streamer.metrics()[RECONNECTS] > reconnects
        time.sleep(max(0.0, stalled + 2 * read_timeout_s - time.monotonic()))
        os.kill(camera.process.pid, signal.SIGCONT)
        resumed = time.monotonic()
        first = first_arrival_after(viewer, resumed, 15)
        assert first is not None, "no frame after the camera resumed"
        assert first - resumed <= 1.0, f"first frame {first - resumed:.2f} s after the camera resumed"
    finally:
        os.kill(camera.process.pid, signal.SIGCONT)
        viewer.stop()
        streamer.kill()


@pytest.mark.slow
def test_killed_camera_is_back_at_viewers_within_a_second_of_its_return(quick_key_camera: GstCamera) -> None:
    camera = quick_key_camera
    streamer = StreamerProcess(camera.url, "--engine", "passthrough").start()
    viewer = start_viewer("ffmpeg", streamer.url(), WIDTH, HEIGHT, "tcp")
    delays = []
    try:
        assert viewer.first_frame.wait(30)
        for down_s in (0.5, 2.0, 1.0, 2.5, 1.5):
            time.sleep(1.0)
            camera.kill()
            time.sleep(down_s)
            camera.start()  # the same port, a new process: back when it prints READY
            back = time.monotonic()
            first = first_arrival_after(viewer, back, 15)
            assert first is not None, "no frame after the camera came back"
            delays.append(first - back)
        assert max(delays) <= 1.0, f"return -> first frame at the viewer: {[round(d, 2) for d in delays]} s"
        print(f"return -> first frame: median {statistics.median(delays):.2f} s, max {max(delays):.2f} s")
    finally:
        viewer.stop()
        streamer.kill()


class TimestampJumper:
    """Makes the camera's RTP timestamps jump (for ``InterleavedProxy``): ``jumps`` are (seconds after the
    first packet, shift in seconds) pairs, applied in order and kept."""

    def __init__(self, jumps: list[tuple[float, float]]) -> None:
        self.jumps = list(jumps)
        self.applied = 0
        self._offset = 0
        self._start: float | None = None

    def __call__(self, packet: bytearray) -> bytes:
        now = time.monotonic()
        self._start = self._start or now
        while self.jumps and now - self._start >= self.jumps[0][0]:
            self._offset += round(self.jumps.pop(0)[1] * 90000)
            self.applied += 1
        timestamp = (int.from_bytes(packet[4:8], "big") + self._offset) % (1 << 32)
        packet[4:8] = timestamp.to_bytes(4, "big")
        return bytes(packet)


@pytest.mark.slow
def test_jumping_camera_timestamps_reach_viewers_and_recordings_evenly(camera: GstCamera, tmp_path: Path) -> None:
    jumper = TimestampJumper([(3.0, -5.0), (6.0, 3600.0)])  # the camera's clock goes back 5 s, then an hour ahead
    proxy = InterleavedProxy(camera.port, jumper)
    record = tmp_path / "restored.mkv"
    streamer = StreamerProcess(proxy.url, "--engine", "passthrough", "--record", str(record)).start()
    viewer = start_viewer("ffmpeg", streamer.url(), WIDTH, HEIGHT, "tcp")
    try:
        assert viewer.first_frame.wait(30)
        deadline = time.monotonic() + 20
        while jumper.applied < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert jumper.applied == 2
        watched_from = time.monotonic()
        time.sleep(3.0)
        streamer.terminate(10)
        arrivals = np.array(viewer.arrivals)
    finally:
        viewer.stop()
        streamer.kill()
        proxy.close()
    around = arrivals[arrivals >= arrivals[0] + 1.0]
    assert np.diff(around).max() < 0.5, "the viewer saw a hole"
    shown = ((around >= watched_from) & (around < watched_from + 2.5)).sum()
    assert shown <= 1.2 * 2.5 * FPS, f"{shown} frames in 2.5 s: a burst at the viewer"
    with av.open(str(record)) as container:
        times = np.array([float(packet.pts * packet.time_base) for packet in container.demux(video=0) if packet.size])
    steps = np.diff(times)
    assert steps.min() > 0.5 / FPS and steps.max() < 3 / FPS, f"recorded frame steps {steps.min():.3f}..{steps.max():.3f} s"
    assert len(read_video(record)) == len(times)
