"""Slow viewers, corrupted camera bytes, SIGTERM with a recording sink, RTSP publish to a real receiver."""

from __future__ import annotations

import asyncio
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
from tests.peers.processes import GstCamera, StreamerProcess, free_port, start_viewer


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


class CorruptingProxy:
    """TCP proxy between camera and streamer that flips bytes inside interleaved RTP payloads."""

    def __init__(self, target_port: int, rate: float) -> None:
        self.target_port = target_port
        self.rate = rate
        self.port = free_port()
        self.corrupted = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        assert self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        rng = random.Random(1)

        async def upstream() -> None:
            while data := await reader.read(4096):
                up_writer.write(data)
            up_writer.close()

        async def downstream() -> None:
            while True:
                first = await up_reader.read(1)
                if not first:
                    break
                if first != b"$":  # RTSP response text: pass through
                    writer.write(first)
                    continue
                header = await up_reader.readexactly(3)
                payload = bytearray(await up_reader.readexactly(int.from_bytes(header[1:], "big")))
                if header[0] == 0 and len(payload) > 20 and rng.random() < self.rate:
                    for _ in range(8):
                        payload[rng.randrange(14, len(payload))] = rng.randrange(256)
                    self.corrupted += 1
                writer.write(b"$" + header + bytes(payload))
            writer.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.mark.slow
def test_corrupted_camera_bytes_are_survived(camera: GstCamera) -> None:
    proxy = CorruptingProxy(camera.port, rate=0.05)
    url = f"rtsp://127.0.0.1:{proxy.port}/cam"
    streamer = StreamerProcess(url, "--engine", "passthrough", "--transport", "tcp").start()
    viewer = start_viewer("ffmpeg", streamer.url(), WIDTH, HEIGHT, "tcp")
    try:
        assert viewer.first_frame.wait(30)
        start = time.monotonic() + 1
        end = start + 6
        while time.monotonic() < end + 0.5:
            time.sleep(0.25)
        assert proxy.corrupted > 20, "the proxy should have corrupted packets"
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
