"""WHIP ingest: an aiortc publisher (a real WebRTC peer) becomes a camera that RTSP viewers watch."""

from __future__ import annotations

import asyncio
import fractions
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import av
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from streamer.app import StreamerApp
from streamer.webrtc.signalling import prefer_codecs, restrict_host_addresses, rtc_configuration
from tests.media import clean_frames
from tests.streamer.app_harness import app_config, running_app
from tests.streamer.http.conftest import TOKEN
from tests.streamer.webrtc.test_whep import wait_for

WIDTH, HEIGHT = 320, 176
SDP = {"Content-Type": "application/sdp"}


class ClipTrack(VideoStreamTrack):
    """A camera for the publisher: a short clip in a loop, at 25 fps (aiortc's own pacing)."""

    def __init__(self) -> None:
        super().__init__()
        self.frames = clean_frames(WIDTH, HEIGHT, 25)
        self.index = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self.frames[self.index % len(self.frames)], format="rgb24")
        frame.pts, frame.time_base = pts, fractions.Fraction(time_base)
        self.index += 1
        return frame


class Publisher:
    def __init__(self, url: str, token: str | None = None, codec: str | None = None,
                 candidates: bool = True) -> None:
        self.url, self.token, self.codec, self.candidates = url, token, codec, candidates
        self.pc = RTCPeerConnection(rtc_configuration([]))
        self.location: str | None = None

    async def offer(self) -> str:
        transceiver = self.pc.addTransceiver(ClipTrack(), direction="sendonly")
        if self.codec:
            prefer_codecs(transceiver, (self.codec,))
        restrict_host_addresses(self.pc, ["127.0.0.1"])
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = str(self.pc.localDescription.sdp)
        if not self.candidates:  # like OBS: the offer names no candidate, the server learns them from checks
            sdp = "\r\n".join(line for line in sdp.split("\r\n")
                               if not line.startswith(("a=candidate:", "a=end-of-candidates")))
        return sdp

    async def publish(self) -> int:
        offer = await self.offer()
        headers = {**SDP, **({"Authorization": f"Bearer {self.token}"} if self.token else {})}
        async with aiohttp.ClientSession() as http, http.post(self.url, data=offer, headers=headers) as reply:
            if reply.status == 201:
                self.location = reply.headers["Location"]
                await self.pc.setRemoteDescription(RTCSessionDescription(await reply.text(), "answer"))
            return reply.status

    async def close(self) -> None:
        await self.pc.close()


@asynccontextmanager
async def whip_app(http: dict[str, Any] | None = None, **source: Any) -> AsyncIterator[StreamerApp]:
    camera = {"name": "phone", "source": {"type": "whip", **source}, "engine": {"type": "passthrough"}}
    config = app_config([camera], http=http or {}, webrtc={"ice_host_addresses": ["127.0.0.1"]})
    async with running_app(StreamerApp(config)) as app:
        yield app


async def rtsp_frames(url: str, count: int) -> tuple[int, str]:
    # subprocess from a thread, not the test loop's (uvloop's) spawn: see streamer.child_process
    viewer = await asyncio.to_thread(subprocess.run, [
        "ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i", url, "-frames:v", str(count),
        "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    ], capture_output=True, timeout=40)
    return len(viewer.stdout) // (WIDTH * HEIGHT * 3), viewer.stderr.decode()


@pytest.mark.usefixtures("real_peers")
@pytest.mark.parametrize(("codec", "candidates"), [("video/h264", True), ("video/vp8", True), ("video/h264", False)])
async def test_a_whip_publisher_reaches_an_rtsp_viewer(codec: str, candidates: bool) -> None:
    async with whip_app() as app:
        http_port = app.http.port if app.http else 0
        publisher = Publisher(f"http://127.0.0.1:{http_port}/whip/phone", codec=codec, candidates=candidates)
        try:
            assert await publisher.publish() == 201
            await wait_for(lambda: app.pipelines[0].hub.units_published >= 5, 20, "the published camera's frames")
            frames, errors = await rtsp_frames(app.rtsp_url("phone"), 25)
            assert frames == 25, errors
            second = Publisher(f"http://127.0.0.1:{http_port}/whip/phone")
            try:
                assert await second.publish() == 409  # one publisher per path
            finally:
                await second.close()
            async with aiohttp.ClientSession() as http:
                async with http.delete(f"http://127.0.0.1:{http_port}{publisher.location}") as reply:
                    assert reply.status == 200
                async with http.delete(f"http://127.0.0.1:{http_port}{publisher.location}") as reply:
                    assert reply.status == 404
            source = app.pipelines[0].source
            assert source.stats.connected is False and source.stats.connects == 1
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{http_port}/metrics") as reply:
                text = await reply.text()
            assert "streamer_whip_sessions_started_total 1.0" in text and "streamer_whip_conflicts_total 1.0" in text
            assert 'streamer_whip_publishers{camera="phone"} 0.0' in text
        finally:
            await publisher.close()


async def test_whip_answers_clearly_when_it_cannot_take_a_publisher() -> None:
    async with whip_app(token=TOKEN) as app:
        base = f"http://127.0.0.1:{app.http.port if app.http else 0}"
        nobody = Publisher(f"{base}/whip/phone")
        wrong = Publisher(f"{base}/whip/phone", token=TOKEN + "x")
        unknown = Publisher(f"{base}/whip/nosuch", token=TOKEN)
        try:
            assert await nobody.publish() == 401
            assert await wrong.publish() == 401
            assert await unknown.publish() == 404
        finally:
            for publisher in (nobody, wrong, unknown):
                await publisher.close()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as http:
            async with http.options(f"{base}/whip/phone") as reply:
                assert reply.status == 204 and reply.headers["Accept-Post"] == "application/sdp"
            async with http.post(f"{base}/whip/phone", data="v=0\r\nnonsense", headers={**SDP, **auth}) as reply:
                assert reply.status == 400 and (await reply.json())["error"]
            viewer = RTCPeerConnection(rtc_configuration([]))
            viewer.addTransceiver("video", direction="recvonly")  # an offer that sends nothing
            await viewer.setLocalDescription(await viewer.createOffer())
            async with http.post(f"{base}/whip/phone", data=viewer.localDescription.sdp,
                                 headers={**SDP, **auth}) as reply:
                assert reply.status == 400
            await viewer.close()
            async with http.patch(f"{base}/whip/sessions/nosuch", data="",
                                  headers={"Content-Type": "application/trickle-ice-sdpfrag"}) as reply:
                assert reply.status == 404
        assert app.pipelines[0].source.publisher is None


async def test_without_the_token_an_unknown_whip_camera_is_401_not_404() -> None:
    async with whip_app(http={"auth": {"token": TOKEN}}) as app:
        base = f"http://127.0.0.1:{app.http.port if app.http else 0}"
        guesses = [Publisher(f"{base}/whip/{name}", token=token)
                   for name, token in (("phone", None), ("nosuch", None), ("nosuch", TOKEN + "x"))]
        known = Publisher(f"{base}/whip/nosuch", token=TOKEN)
        try:
            assert [await guess.publish() for guess in guesses] == [401, 401, 401]  # cameras cannot be enumerated
            assert await known.publish() == 404
        finally:
            for publisher in (*guesses, known):
                await publisher.close()
