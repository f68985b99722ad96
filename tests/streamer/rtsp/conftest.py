from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from streamer.config import EncoderConfig, RtspAuthConfig, RtspServerConfig, RtspUserConfig
from streamer.encoder import H264Encoder
from streamer.graph.frames import Frame
from streamer.hub import StreamHub
from streamer.rtsp.server import RtspServer
from tests.media import clean_frames


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


@pytest.fixture(params=["basic", "digest"])
def rtsp_server_with_auth(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    auth = RtspAuthConfig(method=request.param, users=[RtspUserConfig(username="viewer", password="s3cret")])
    yield from _serve(RtspServerConfig(host="127.0.0.1", port=0, auth=auth))


def frame_count(output: bytes, width: int = 160, height: int = 96) -> int:
    return len(output) // (width * height * 3)


__all__ = ["RunningServer", "frame_count", "np"]
