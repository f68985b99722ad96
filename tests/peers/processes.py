"""Real peers as processes: the GStreamer RTSP camera, ffmpeg and GStreamer viewers, streamer itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tools.live_peers import (
    free_port as free_port,  # re-exported: tests take it from here with the other peers
)
from tools.live_peers import scrape

ROOT = Path(__file__).resolve().parents[2]
CAMERA_SCRIPT = ROOT / "tools" / "gst_rtsp_camera.py"
SYSTEM_PYTHON = "/usr/bin/python3"


def wait_for_line(process: subprocess.Popen[str], expected: str, timeout: float) -> list[str]:
    """Wait until the process prints ``expected`` on stdout. A reader thread keeps draining stdout into
    the returned list (so the process never blocks on a full pipe) and sets an event on the line."""
    found = threading.Event()
    lines: list[str] = []

    def reader() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if expected in line:
                found.set()

    def drain() -> None:
        reader()
        found.set()  # the process closed stdout (it exited) without the line: fail now, not at the timeout

    threading.Thread(target=drain, daemon=True).start()
    if not found.wait(timeout) or not any(expected in line for line in lines):
        raise TimeoutError(f"process did not print {expected!r} within {timeout} s: {''.join(lines)[-2000:]}")
    return lines


def stop_process(process: subprocess.Popen[Any] | None, timeout: float) -> None:
    """SIGTERM a peer still running, SIGKILL it if it has not exited within ``timeout`` s, and reap it."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class GstCamera:
    """GStreamer's RTSP server serving ``clip`` in a loop at rtsp://127.0.0.1:PORT/cam."""

    def __init__(
        self, clip: Path, width: int, height: int, fps: int = 25, port: int | None = None, key_int: int | None = None
    ) -> None:
        self.clip = clip
        self.width, self.height, self.fps = width, height, fps
        self.key_int = key_int or fps  # frames between keyframes
        self.port = port or free_port()
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self) -> GstCamera:
        self.process = subprocess.Popen(
            [SYSTEM_PYTHON, str(CAMERA_SCRIPT), "--port", str(self.port), "--file", str(self.clip),
             "--width", str(self.width), "--height", str(self.height), "--fps", str(self.fps),
             "--key-int", str(self.key_int)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        wait_for_line(self.process, "READY", 20)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None


@dataclass
class FrameCapture:
    """Raw RGB frames a viewer decoded, with their arrival times (monotonic)."""

    width: int
    height: int
    frames: list[np.ndarray] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    first_frame: threading.Event = field(default_factory=threading.Event)
    process: subprocess.Popen[bytes] | None = None
    keep_every: int = 1

    def count_between(self, start: float, end: float) -> int:
        return sum(1 for arrival in self.arrivals if start <= arrival < end)

    def stop(self) -> None:
        stop_process(self.process, 5)


def _pump(capture: FrameCapture, stream: object) -> None:
    size = capture.width * capture.height * 3
    index = 0
    while True:
        data = stream.read(size)  # type: ignore[attr-defined]
        if not data or len(data) < size:
            return
        capture.arrivals.append(time.monotonic())
        if index % capture.keep_every == 0:
            capture.frames.append(np.frombuffer(data, np.uint8).reshape(capture.height, capture.width, 3))
        index += 1
        capture.first_frame.set()


def start_viewer(kind: str, url: str, width: int, height: int, transport: str = "tcp", keep_every: int = 1) -> FrameCapture:
    """An ffmpeg or gst-launch viewer decoding ``url`` to raw RGB on its stdout."""
    if kind == "ffmpeg":
        command = ["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", transport, "-i", url, "-fps_mode", "passthrough",
                   "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "pipe:1"]
    else:
        command = ["gst-launch-1.0", "-q", "rtspsrc", f"location={url}", f"protocols={transport}", "latency=100",
                   "!", "rtph264depay", "!", "h264parse", "!", "avdec_h264", "!", "videoconvert", "!", "videoscale",
                   "!", f"video/x-raw,format=RGB,width={width},height={height}", "!", "fdsink", "fd=1", "sync=false"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    capture = FrameCapture(width, height, process=process, keep_every=keep_every)
    threading.Thread(target=_pump, args=(capture, process.stdout), daemon=True).start()
    return capture


def write_camera_config(
    path: Path, url: str, source: dict | None = None, encoder: dict | None = None, record: Path | None = None
) -> Path:
    """A one-camera YAML configuration (camera ``restored``) for settings the command line has no flag for."""
    camera: dict = {"name": "restored", "source": {"type": "rtsp", "url": url, **(source or {})}}
    if encoder:
        camera["encoder"] = encoder
    if record is not None:
        camera["sinks"] = [{"type": "file", "path": str(record)}]
    path.write_text(yaml.safe_dump({"cameras": [camera]}))
    return path


class StreamerProcess:
    """``python -m streamer run ...`` as a user would start it."""

    def __init__(self, *args: str, rtsp_port: int | None = None, http_port: int | None = None) -> None:
        self.rtsp_port = rtsp_port or free_port()
        self.http_port = http_port or free_port()
        self.args = args
        self.process: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    def url(self, name: str = "restored") -> str:
        return f"rtsp://127.0.0.1:{self.rtsp_port}/{name}"

    def start(self, ready_timeout: float = 60) -> StreamerProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamer", "run", *self.args, "--rtsp-port", str(self.rtsp_port),
             "--http-port", str(self.http_port)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.log = wait_for_line(self.process, "health and metrics at", ready_timeout)
        return self

    def metrics(self) -> dict[str, float]:
        return scrape(self.http_port)

    def wait_metric(self, name: str, minimum: float, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        value = 0.0
        while time.monotonic() < deadline:
            value = self.metrics().get(name, 0.0)
            if value >= minimum:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"{name} stayed at {value} < {minimum} for {timeout} s")

    def terminate(self, timeout: float = 5.0) -> float:
        """SIGTERM; returns how long the process took to exit."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout)
        return time.monotonic() - started

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
