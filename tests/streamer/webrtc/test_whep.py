"""WHEP egress with a real WebRTC peer (aiortc) over 127.0.0.1, and the protocol's edge cases."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable

import aiohttp
from aiortc import RTCPeerConnection

from streamer.webrtc.signalling import restrict_host_addresses, rtc_configuration
from tests.streamer.http.conftest import TOKEN
from tests.streamer.webrtc.conftest import FPS, HEIGHT, WIDTH, WhepServer, whep_server
from tools.whep_client import WhepPlayer

SDP = {"Content-Type": "application/sdp"}


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


async def rates_over(server: WhepServer, player: WhepPlayer, seconds: float) -> tuple[int, int]:
    """Access units the hub published and pictures the player decoded over the same ``seconds``."""
    published, decoded = server.hub.units_published, len(player.frames)
    await asyncio.sleep(seconds)
    return server.hub.units_published - published, len(player.frames) - decoded


async def metrics(server: WhepServer) -> str:
    async with aiohttp.ClientSession() as http, http.get(server.url("/metrics")) as response:
        return await response.text()


async def offer_sdp(video: str | None = "recvonly", audio: bool = False) -> str:
    pc = RTCPeerConnection(rtc_configuration([]))
    if audio:
        pc.addTransceiver("audio", direction="recvonly")
    if video:
        pc.addTransceiver("video", direction=video)
    restrict_host_addresses(pc, ["127.0.0.1"])
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_a_whep_viewer_decodes_the_stream_at_the_camera_rate() -> None:
    async with whep_server() as server:
        player = WhepPlayer(server.url("/whep/live"))
        await player.start()
        try:
            assert player.location and player.location.startswith("/whep/sessions/")
            assert await player.first_frame(10), "no picture within 10 s"
            published, decoded = await rates_over(server, player, 5.0)
            # the stream's own rate is the camera's (25 fps on a quiet machine; the feeder shares a busy box)
            assert decoded >= 0.95 * published - 1, f"{decoded} pictures decoded of {published} published in 5 s"
            assert published >= 0.5 * FPS * 5, f"the test's encoder made only {published} pictures in 5 s"
            assert {(width, height) for _, width, height in player.frames} == {(WIDTH, HEIGHT)}
            text = await metrics(server)
            assert 'streamer_webrtc_viewers{camera="live",view="restored"} 1.0' in text
            assert "streamer_webrtc_sessions_started_total 1.0" in text
            assert len([sub for sub in server.hub.subscriptions if sub.name.startswith("whep-")]) == 1
            async with aiohttp.ClientSession() as http:
                async with http.delete(server.url(player.location)) as response:
                    assert response.status == 200
                async with http.delete(server.url(player.location)) as response:
                    assert response.status == 404  # DELETE twice
        finally:
            await player.stop(delete=False)
        assert 'streamer_webrtc_viewers{camera="live",view="restored"} 0.0' in await metrics(server)
        await wait_for(lambda: not server.hub.subscriptions, 5, "the viewer's subscription ends")


async def test_signalling_edge_cases_get_clear_answers() -> None:
    async with whep_server(ice_servers=[{"urls": ["turn:127.0.0.1:9?transport=tcp"]}]) as server, \
            aiohttp.ClientSession() as http:
        async with http.options(server.url("/whep/live"), headers={"Origin": "http://elsewhere.example",
                                                                  "Access-Control-Request-Method": "POST"}) as reply:
            assert reply.status == 204
            assert reply.headers["Accept-Post"] == "application/sdp"
            assert reply.headers["Access-Control-Allow-Origin"] == "*"
            assert "POST" in reply.headers["Access-Control-Allow-Methods"]
            assert "Location" in reply.headers["Access-Control-Expose-Headers"]
            assert reply.headers.getall("Link") == ['<turn:127.0.0.1:9?transport=tcp>; rel="ice-server"']
        good = await offer_sdp(audio=True)
        async with http.post(server.url("/whep/nosuch"), data=good, headers=SDP) as reply:
            assert reply.status == 404 and "error" in await reply.json()
        async with http.post(server.url("/whep/live"), data=good, headers={"Content-Type": "text/plain"}) as reply:
            assert reply.status == 415
        for bad in ("", "hello", good.replace("a=fingerprint", "a=fungerprint"), good.replace("H264", "H999"),
                    await offer_sdp(video=None, audio=True), await offer_sdp(video="sendonly")):
            async with http.post(server.url("/whep/live"), data=bad, headers=SDP) as reply:
                assert reply.status == 400, bad
                assert (await reply.json())["error"]
        async with http.patch(server.url("/whep/sessions/0123"), data="a=end-of-candidates\r\n",
                              headers={"Content-Type": "application/trickle-ice-sdpfrag"}) as reply:
            assert reply.status == 404
        async with http.post(server.url("/whep/live"), data=good, headers=SDP) as reply:
            assert reply.status == 201
            assert reply.headers["Content-Type"] == "application/sdp"
            location, etag = reply.headers["Location"], reply.headers["ETag"]
            answer = await reply.text()
        assert "m=audio" in answer and "a=inactive" in answer  # audio answered inactive
        assert "H264" in answer and "VP8" not in answer
        fragment = "a=mid:1\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n"
        frag = {"Content-Type": "application/trickle-ice-sdpfrag"}
        async with http.patch(server.url(location), data=fragment, headers={**frag, "If-Match": "*"}) as reply:
            assert reply.status == 204
        async with http.patch(server.url(location), data=fragment, headers={**frag, "If-Match": etag}) as reply:
            assert reply.status == 204
        async with http.patch(server.url(location), data=fragment, headers={**frag, "If-Match": '"other"'}) as reply:
            assert reply.status == 412
        async with http.patch(server.url(location), data="a=candidate:nonsense\r\n", headers=frag) as reply:
            assert reply.status == 400
        async with http.delete(server.url(location)) as reply:
            assert reply.status == 200
        text = await metrics(server)
        assert "streamer_webrtc_bad_offers_total 7.0" in text  # 415 + six 400s


async def test_whep_needs_the_token_but_preflight_does_not() -> None:
    turn = {"urls": ["turn:127.0.0.1:9?transport=tcp"], "username": "viewer", "credential": "turn-secret"}
    async with whep_server(http={"auth": {"token": TOKEN}}, ice_servers=[turn]) as server, \
            aiohttp.ClientSession() as http:
        async with http.options(server.url("/whep/live")) as reply:
            assert reply.status == 204
            assert reply.headers.getall("Link") == ['<turn:127.0.0.1:9?transport=tcp>; rel="ice-server"']  # no secret
        good = await offer_sdp()
        async with http.post(server.url("/whep/live"), data=good, headers=SDP) as reply:
            assert reply.status == 401
        async with http.post(server.url("/whep/live"), data=good,
                             headers={**SDP, "Authorization": f"Bearer {TOKEN}"}) as reply:
            assert reply.status == 201
            assert 'credential="turn-secret"' in reply.headers["Link"]  # to an authorized player only
            async with http.delete(server.url(reply.headers["Location"]),
                                   headers={"Authorization": f"Bearer {TOKEN}"}) as deleted:
                assert deleted.status == 200
        player = WhepPlayer(server.url("/whep/live"), token=TOKEN)
        await player.start()
        try:
            assert await player.first_frame(10)
        finally:
            await player.stop()


async def test_sessions_are_capped() -> None:
    async with whep_server(max_sessions=1) as server, aiohttp.ClientSession() as http:
        good = await offer_sdp()
        async with http.post(server.url("/whep/live"), data=good, headers=SDP) as reply:
            assert reply.status == 201
        async with http.post(server.url("/whep/live"), data=await offer_sdp(), headers=SDP) as reply:
            assert reply.status == 503 and reply.headers["Retry-After"]


def free_udp_ports(count: int) -> int:
    """The first of ``count`` consecutive UDP ports that are free now, on 127.0.0.1."""
    while True:
        first = random.randint(20000, 60000)
        sockets = []
        try:
            for port in range(first, first + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()


async def test_ice_binds_in_the_configured_udp_port_range_and_says_when_it_is_full() -> None:
    first = free_udp_ports(2)
    async with whep_server(ice_udp_ports=[first, first + 1]) as server, aiohttp.ClientSession() as http:
        player = WhepPlayer(server.url("/whep/live"))
        await player.start()
        try:
            assert await player.first_frame(10), "no picture with the port range"
            session = next(iter(server.server.whep.sessions.values())) if server.server.whep else None
            assert session is not None
            ports = {int(line.split()[5]) for line in session.pc.localDescription.sdp.splitlines()
                     if line.startswith("a=candidate:")}
            assert ports and ports <= {first, first + 1}, ports
            async with http.post(server.url("/whep/live"), data=await offer_sdp(), headers=SDP) as reply:
                assert reply.status == 201  # the second port
            async with http.post(server.url("/whep/live"), data=await offer_sdp(), headers=SDP) as reply:
                assert reply.status == 503 and "ice_udp_ports" in (await reply.json())["error"]
        finally:
            await player.stop()
