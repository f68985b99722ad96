"""Slow viewers, corrupted camera bytes, SIGTERM with a recording sink, RTSP publish to a real receiver."""

from __future__ import annotations

import random
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FPS, HEIGHT, WIDTH
from tests.media import read_video
from tests.peers.processes import GstCamera, StreamerProcess, free_port, start_viewer, write_camera_config
from tests.peers.rtsp_proxy import InterleavedProxy


def rtsp_play_tcp(url: str) -> socket.socket:
    """A minimal RTSP client that sets up TCP interleaved playback and returns the socket."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((host, int(port)))

    def request(text: str) -> str:
        sock.sendall(text.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(1)
        head = data.decode()
        length = next((int(line.split(":")[1]) for line in head.split("\r\n") if line.lower().startswith("content-length")), 0)
        body = b""
        while len(body) < length:
            body += sock.recv(length - len(body))
        return head

    request(f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n")
    head = request(f"SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n")
    session = next(line.split(":", 1)[1].split(";")[0].strip() for line in head.split("\r\n") if line.startswith("Session"))
    request(f"PLAY {url} RTSP/1.0\r\nCSeq: 3\r\nSession: {session}\r\n\r\n")
    return sock


@pytest.mark.slow
def test_slow_viewer_does_not_reduce_another_viewers_frames(camera: GstCamera) -> None:
    streamer = StreamerProcess(camera.url, "--engine", "passthrough", "--transport", "udp").start()  # UDP ingest
    normal = start_viewer("ffmpeg", streamer.url(), WIDTH, HEIGHT, "tcp")
    slow = rtsp_play_tcp(streamer.url())
    stop = threading.Event()

    def trickle() -> None:  # reads 2 KB every 100 ms: far below the stream's bitrate
        while not stop.is_set():
            try:
                slow.recv(2048)
            except OSError:
                return
            stop.wait(0.1)

    threading.Thread(target=trickle, daemon=True).start()
    try:
        assert normal.first_frame.wait(30)
        start = time.monotonic() + 1
        end = start + 8
        while time.monotonic() < end + 0.5:
            time.sleep(0.25)
        count = normal.count_between(start, end)
        assert count >= 0.95 * FPS * 8, f"normal viewer got {count} frames beside a slow one"
        dropped = streamer.metrics()['streamer_viewer_dropped_units_total{camera="restored"}']
        assert dropped > 0, "the slow viewer's queue should have dropped access units"
    finally:
        stop.set()
        slow.close()
        normal.stop()
        streamer.kill()


class Corrupter:
    """Flips bytes inside a share of the camera's RTP payloads (for ``InterleavedProxy``)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.corrupted = 0
        self._rng = random.Random(1)

    def __call__(self, payload: bytearray) -> bytes:
        if len(payload) > 20 and self._rng.random() < self.rate:
            for _ in range(8):
                payload[self._rng.randrange(14, len(payload))] = self._rng.randrange(256)
            self.corrupted += 1
        return bytes(payload)


@pytest.mark.slow
def test_corrupted_camera_bytes_are_survived(camera: GstCamera) -> None:
    corrupter = Corrupter(rate=0.05)
    proxy = InterleavedProxy(camera.port, corrupter)
    streamer = StreamerProcess(proxy.url, "--engine", "passthrough", "--transport", "tcp").start()
    viewer = start_viewer("ffmpeg", streamer.url(), WIDTH, HEIGHT, "tcp")
    try:
        assert viewer.first_frame.wait(30)
        start = time.monotonic() + 1
        end = start + 6
        while time.monotonic() < end + 0.5:
            time.sleep(0.25)
        assert corrupter.corrupted > 20, "the proxy should have corrupted packets"
        count = viewer.count_between(start, end)
        assert count >= 0.8 * FPS * 6, f"viewer got {count} frames from a corrupted camera"
        assert streamer.process is not None and streamer.process.poll() is None
    finally:
        viewer.stop()
        streamer.kill()
        proxy.close()


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_sigterm_exits_quickly_and_recording_is_playable(camera: GstCamera, tmp_path: Path, suffix: str) -> None:
    record = tmp_path / f"restored{suffix}"
    streamer = StreamerProcess(camera.url, "--engine", "passthrough", "--record", str(record)).start()
    try:
        streamer.wait_metric('streamer_frames_out_total{camera="restored"}', 3 * FPS, 30)
        elapsed = streamer.terminate(timeout=10)
        assert elapsed <= 5.0, f"shutdown took {elapsed:.1f} s"
        assert streamer.process is not None and streamer.process.returncode == 0
        frames = read_video(record)
        assert len(frames) >= 2 * FPS, f"recording holds {len(frames)} frames"
        assert frames[-1].shape == (HEIGHT, WIDTH, 3)
        assert float(np.median([np.std(frame) for frame in frames])) > 5, "recorded frames should carry pictures"
    finally:
        streamer.kill()


@pytest.mark.slow
def test_publish_to_a_real_rtsp_receiver(camera: GstCamera) -> None:
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/published"
    receiver = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-v", "error", "-rtsp_flags", "listen", "-timeout", "30", "-i", url, "-t", "6",
         "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    streamer = StreamerProcess(camera.url, "--engine", "passthrough", "--publish", url).start()
    try:
        out, err = receiver.communicate(timeout=60)
        frame_size = WIDTH * HEIGHT * 3
        frames = len(out) // frame_size
        assert frames >= 0.9 * 6 * FPS, f"receiver got {frames} frames: {err.decode()[-500:]}"
        last = np.frombuffer(out[(frames - 1) * frame_size : frames * frame_size], np.uint8)
        assert float(np.std(last)) > 5
    finally:
        receiver.kill()
        streamer.kill()


@pytest.mark.slow
def test_mkv_recording_killed_outright_loses_well_under_a_second(camera: GstCamera, tmp_path: Path) -> None:
    """SIGKILL (no clean close): the frames already out must be in the file, decodable, but for the last few."""
    record = tmp_path / "restored.mkv"
    # A low bitrate: what the muxer buffers by default then spans a second or more.
    config = write_camera_config(tmp_path / "record.yaml", camera.url, encoder={"bitrate_kbps": 300}, record=record)
    streamer = StreamerProcess("--config", str(config), "--engine", "passthrough").start()
    try:
        streamer.wait_metric('streamer_frames_out_total{camera="restored"}', 6 * FPS, 30)
        time.sleep(0.5 + random.random())  # anywhere in a keyframe interval
        sent = streamer.metrics()['streamer_frames_out_total{camera="restored"}']
        assert streamer.process is not None
        streamer.process.kill()
        streamer.process.wait(5)
    finally:
        streamer.kill()
    frames = read_video(record)
    lost = sent - len(frames)
    print(f"SIGKILLed .mkv: {lost:.0f} of {sent:.0f} frames lost ({lost / FPS:.2f} s)")
    assert lost <= 0.4 * FPS, f"{lost:.0f} of {sent:.0f} frames lost ({lost / FPS:.2f} s)"
    assert float(np.std(frames[-1])) > 5, "the last recorded frame should carry a picture"
