from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pytest

from streamer.config import EncoderConfig, RtspAuthConfig, RtspServerConfig, RtspUserConfig
from streamer.encoder import H264Encoder
from streamer.graph.frames import Frame
from streamer.hub import StreamHub
from streamer.rtsp.server import RtspServer
from tests.media import clean_frames

T = TypeVar("T")


@dataclass
class RunningServer:
    server: RtspServer
    hub: StreamHub
    loop: asyncio.AbstractEventLoop

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, name: str = "live", credentials: str = "") -> str:
        return f"rtsp://{credentials}127.0.0.1:{self.port}/{name}"

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` in the server's loop thread (to read its state consistently)."""

        async def run() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)

    def wait_until(self, predicate: Callable[[RtspServer], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not self.call(lambda: predicate(self.server)):
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout} s: {what}")
            time.sleep(0.05)


def _serve(config: RtspServerConfig) -> Iterator[RunningServer]:
    """An RTSP server in its own loop thread, fed with a real H.264 stream at 25 fps."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, object] = {}

    async def feed(hub: StreamHub) -> None:
        encoder = H264Encoder(EncoderConfig(bitrate_kbps=800))
        frames = clean_frames(160, 96, 25)
        index = 0
        while True:
            frame = Frame(frames[index % len(frames)], index / 25, time.time(), index)
            for unit in await asyncio.to_thread(encoder.encode, frame):
                hub.publish(unit)
            index += 1
            await asyncio.sleep(0.04)

    async def main() -> None:
        hub = StreamHub("live")
        server = RtspServer(config, {"live": hub})
        await server.start()
        holder.update(server=server, hub=hub, feeder=asyncio.create_task(feed(hub)))
        started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    running = RunningServer(holder["server"], holder["hub"], loop)  # type: ignore[arg-type]
    yield running

    async def shutdown() -> None:
        feeder = holder["feeder"]
        feeder.cancel()  # type: ignore[attr-defined]
        await running.server.stop()

    asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture
def rtsp_server() -> Iterator[RunningServer]:
    yield from _serve(RtspServerConfig(host="127.0.0.1", port=0, session_timeout_s=5))


@pytest.fixture
def serve() -> Iterator[Callable[..., RunningServer]]:
    """Start a server with the given RtspServerConfig fields (on 127.0.0.1, any free port)."""
    running: list[Iterator[RunningServer]] = []

    def start(**fields: Any) -> RunningServer:
        generator = _serve(RtspServerConfig(host="127.0.0.1", port=0, **fields))
        running.append(generator)
        return next(generator)

    yield start
    for generator in running:
        next(generator, None)


def viewer_auth(method: str, **fields: Any) -> RtspAuthConfig:
    return RtspAuthConfig(method=method, users=[RtspUserConfig(username="viewer", password="s3cret")], **fields)


@pytest.fixture(params=["basic", "digest"])
def rtsp_server_with_auth(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    yield from _serve(RtspServerConfig(host="127.0.0.1", port=0, auth=viewer_auth(request.param)))


def frame_count(output: bytes, width: int = 160, height: int = 96) -> int:
    return len(output) // (width * height * 3)


def ffmpeg_frames(url: str, transport: str = "tcp", seconds: int = 2) -> tuple[int, str]:
    """Frames an ffmpeg viewer decodes from ``url`` (it stops after ``seconds`` at 25 fps)."""
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", transport, "-i", url, "-frames:v", str(25 * seconds),
         "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        capture_output=True, timeout=30,
    )
    return frame_count(result.stdout), result.stderr.decode()


def gst_frames(url: str, transport: str = "tcp", frames: int = 25, user: str = "", password: str = "") -> tuple[int, str]:
    """Frames a gst-launch rtspsrc viewer decodes from ``url`` (it stops after ``frames``)."""
    credentials = [f"user-id={user}", f"user-pw={password}"] if user else []
    result = subprocess.run(
        ["gst-launch-1.0", "-q", "rtspsrc", f"location={url}", *credentials, f"protocols={transport}", "latency=100",
         "!", "rtph264depay", "!", "h264parse", "!", "avdec_h264", "!", "videoconvert", "!", "video/x-raw,format=RGB",
         "!", "identity", f"eos-after={frames}", "!", "fdsink", "fd=1"],
        capture_output=True, timeout=30,
    )
    return frame_count(result.stdout), result.stderr.decode()[-500:]


__all__ = ["RunningServer", "ffmpeg_frames", "frame_count", "gst_frames", "np", "viewer_auth"]
