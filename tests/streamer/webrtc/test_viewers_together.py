"""Two WebRTC viewers and an RTSP viewer of the same stream at once: each keeps the stream's rate."""

from __future__ import annotations

import asyncio

import pytest

from streamer.child_process import ChildProcess
from streamer.config import RtspServerConfig
from streamer.rtsp.server import RtspServer
from tests.streamer.webrtc.conftest import HEIGHT, WIDTH, whep_server
from tests.streamer.webrtc.test_whep import wait_for
from tools.whep_client import WhepPlayer


class RtspCounter:
    """An ffmpeg RTSP viewer decoding to raw frames; counts the frames it delivers."""

    def __init__(self) -> None:
        self.frames = 0
        self.process: ChildProcess | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self, url: str) -> None:
        self.process = await ChildProcess.start([
            "ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i", url, "-f", "rawvideo",
            "-pix_fmt", "gray", "pipe:1",
        ])
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        if self.process is None:
            return
        while True:
            try:
                await self.process.stdout.readexactly(WIDTH * HEIGHT)
            except asyncio.IncompleteReadError:  # ffmpeg ended
                return
            self.frames += 1

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@pytest.mark.usefixtures("real_peers")
async def test_two_webrtc_viewers_and_an_rtsp_viewer_keep_the_rate_together() -> None:
    async with whep_server() as server:
        rtsp = RtspServer(RtspServerConfig(host="127.0.0.1", port=0), {"live": server.hub})
        await rtsp.start()
        players = [WhepPlayer(server.url("/whep/live")) for _ in range(2)]
        ffmpeg = RtspCounter()
        try:
            await ffmpeg.start(f"rtsp://127.0.0.1:{rtsp.port}/live")
            for player in players:
                await player.start()
            for player in players:
                assert await player.first_frame(10)
            await wait_for(lambda: ffmpeg.frames > 0, 10, "the RTSP viewer's first frame")
            await asyncio.sleep(1.0)  # past ffmpeg's start-up burst
            published = server.hub.units_published
            before = [len(player.frames) for player in players] + [ffmpeg.frames]
            await asyncio.sleep(5.0)
            published = server.hub.units_published - published
            after = [len(player.frames) for player in players] + [ffmpeg.frames]
            for name, start, end in zip(("webrtc 1", "webrtc 2", "rtsp"), before, after, strict=True):
                assert end - start >= 0.95 * published - 2, f"{name}: {end - start} of {published} in 5 s"
            assert sum(sub.dropped for sub in server.hub.subscriptions) == 0
        finally:
            for player in players:
                await player.stop()
            await ffmpeg.stop()
            await rtsp.stop()
