"""WHEP limits that hold under concurrency and at shutdown: the session cap, trickled candidates, offer size,
the drop counter of ended viewers, and sessions racing the server's close."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from streamer.webrtc.sessions import SessionRegistry
from streamer.webrtc.signalling import MAX_SESSION_CANDIDATES
from streamer.webrtc.whep import MAX_SDP_BYTES
from tests.streamer.webrtc.conftest import whep_server
from tests.streamer.webrtc.test_whep import SDP, metrics, offer_sdp, wait_for
from tools.whep_client import WhepPlayer

FRAG = {"Content-Type": "application/trickle-ice-sdpfrag"}


async def test_parallel_offers_do_not_exceed_max_sessions() -> None:
    async with whep_server(max_sessions=1) as server, aiohttp.ClientSession() as http:
        offers = [await offer_sdp() for _ in range(5)]

        async def post(offer: str) -> int:
            async with http.post(server.url("/whep/live"), data=offer, headers=SDP) as reply:
                return reply.status

        statuses = await asyncio.gather(*(post(offer) for offer in offers))
        assert sorted(statuses) == [201, 503, 503, 503, 503], statuses
        assert server.server.whep is not None and len(server.server.whep.sessions) == 1


async def test_trickled_candidates_are_capped_per_session() -> None:
    async with whep_server() as server, aiohttp.ClientSession() as http:
        async with http.post(server.url("/whep/live"), data=await offer_sdp(), headers=SDP) as reply:
            assert reply.status == 201
            location = reply.headers["Location"]
        fragment = "a=mid:1\r\n" + "".join(
            f"a=candidate:{i} 1 udp 2130706431 127.0.0.1 {9 + i} typ host\r\n" for i in range(16)
        )
        for _ in range(MAX_SESSION_CANDIDATES // 16):  # each PATCH under the per-fragment cap
            async with http.patch(server.url(location), data=fragment, headers=FRAG) as reply:
                assert reply.status == 204
        async with http.patch(server.url(location), data=fragment, headers=FRAG) as reply:
            assert reply.status == 400 and "candidates" in (await reply.json())["error"]


async def chunks(body: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_a_chunked_offer_over_the_sdp_limit_is_413() -> None:
    async with whep_server() as server, aiohttp.ClientSession() as http:
        big = (await offer_sdp()).encode() + b"a=x-padding:" + b"x" * MAX_SDP_BYTES + b"\r\n"
        async with http.post(server.url("/whep/live"), data=chunks(big), headers=SDP) as reply:
            assert reply.status == 413 and (await reply.json())["error"]
        async with http.post(
            server.url("/whep/live"), data=chunks((await offer_sdp()).encode()), headers=SDP
        ) as reply:
            assert reply.status == 201  # a chunked offer under the limit is fine


def dropped_units(text: str) -> float:
    found = re.search(r'^streamer_webrtc_viewer_dropped_units_total\{camera="live",view="restored"\} (\S+)$', text, re.M)
    assert found, text
    return float(found.group(1))


async def test_the_viewer_drop_counter_does_not_go_down_when_a_viewer_leaves() -> None:
    async with whep_server() as server:
        player = WhepPlayer(server.url("/whep/live"))
        await player.start()
        try:
            assert await player.first_frame(10), "no picture within 10 s"
            assert server.server.whep is not None
            session = next(iter(server.server.whep.sessions.values()))
            assert session.track.subscription is not None
            session.track.subscription.dropped += 7  # as if the viewer had fallen behind
            before = dropped_units(await metrics(server))
            assert before >= 7
        finally:
            await player.stop()
        await wait_for(
            lambda: not server.server.whep or not server.server.whep.sessions, 5, "the session ends"
        )
        assert dropped_units(await metrics(server)) >= before


async def test_an_offer_answered_after_close_is_refused_and_closed() -> None:
    async with whep_server() as server, aiohttp.ClientSession() as http:
        whep = server.server.whep
        assert whep is not None
        await whep.close()  # as at shutdown, while offers are still in flight
        async with http.post(server.url("/whep/live"), data=await offer_sdp(), headers=SDP) as reply:
            assert reply.status == 503 and (await reply.json())["error"]
        assert not whep.sessions


class FakePeer:
    def __init__(self) -> None:
        self.connectionState = "new"
        self.handlers: dict[str, Callable[[], None]] = {}

    def on(self, event: str, handler: Callable[[], None]) -> None:
        self.handlers[event] = handler


class SlowSession:
    """A session whose close takes a while (like aiortc's pc.close)."""

    def __init__(self) -> None:
        self.id = "slow"
        self.stream = "live"
        self.dropped = 0
        self.pc: Any = FakePeer()
        self.closed = False
        self.finished = False

    @property
    def label(self) -> str:
        return "slow session"

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await asyncio.sleep(0.2)
        self.finished = True


async def test_close_lets_a_session_that_is_ending_finish_closing() -> None:
    registry: SessionRegistry[Any] = SessionRegistry(30.0)
    session = SlowSession()
    assert await registry.add(session)
    session.pc.connectionState = "failed"
    session.pc.handlers["connectionstatechange"]()  # its end() starts as a task
    await asyncio.sleep(0)
    await asyncio.wait_for(registry.close(), 5)
    assert session.finished, "close() cut the session's close short"
    late = SlowSession()
    assert not await registry.add(late)  # after close: refused, and closed
    assert late.finished and not registry.sessions
