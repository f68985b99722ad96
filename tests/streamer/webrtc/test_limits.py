"""WHEP limits that hold under concurrency: the session cap, trickled candidates, offer size."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp

from streamer.webrtc.signalling import MAX_SESSION_CANDIDATES
from streamer.webrtc.whep import MAX_SDP_BYTES
from tests.streamer.webrtc.conftest import whep_server
from tests.streamer.webrtc.test_whep import SDP, offer_sdp

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
