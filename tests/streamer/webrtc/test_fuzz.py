"""Mangled offers and fragments against WHEP and WHIP: every one gets a clear 4xx (or 201 when it still
works), never a 500 or a traceback, and the server keeps serving. Seeded: ``STREAMER_FUZZ_SEED``."""

from __future__ import annotations

import os
import random

import aiohttp

from tests.streamer.webrtc.conftest import whep_server
from tests.streamer.webrtc.test_whep import metrics, offer_sdp
from tests.streamer.webrtc.test_whip import Publisher, whip_app
from tools.whep_client import WhepPlayer

SEED = int(os.environ.get("STREAMER_FUZZ_SEED", "20261204"))
CLEAR = {201, 400, 404, 409, 412, 413, 415, 501, 503}
JUNK = ["", "\x00", "a=", "=", "m=video", "m=video 9 UDP/TLS/RTP/SAVPF", "a=rtpmap:96", "a=fmtp:96 x",
        "a=candidate:1 1 udp 1 1.2.3.4 x typ host", "a=ssrc:-1 cname:x", "a=mid:" + "m" * 300, "c=IN IP9 ::",
        "a=fingerprint:sha-256 ZZ", "a=setup:nonsense", "a=group:BUNDLE 7 8 9", "b=AS:-5", "\xff\xfe",
        "a=rtcp-fb:* nack", "a=extmap:999 urn:x", "a=ice-ufrag:", "a=sendrecv", "a=inactive", "t=x y"]


def mangle(rng: random.Random, sdp: str) -> str:
    lines = sdp.split("\r\n")
    for _ in range(rng.randint(1, 4)):
        if not lines:
            break
        action = rng.randrange(5)
        index = rng.randrange(len(lines))
        if action == 0:
            del lines[index]
        elif action == 1:
            lines.insert(index, rng.choice(JUNK))
        elif action == 2:
            lines[index] = lines[index][: rng.randrange(len(lines[index]) + 1)]
        elif action == 3:
            lines[index] = lines[index].replace(rng.choice("0123456789"), rng.choice(["", "-", "99999999999", "x"]))
        else:
            lines = lines[: rng.randrange(len(lines) + 1)]
    return "\r\n".join(lines)


async def post_all(http: aiohttp.ClientSession, url: str, offers: list[str], base: str) -> list[int]:
    statuses = []
    for offer in offers:
        async with http.post(url, data=offer.encode("utf-8", "surrogateescape"),
                             headers={"Content-Type": "application/sdp"}) as reply:
            statuses.append(reply.status)
            location = reply.headers.get("Location")
        if location:  # it still worked: end it, and poke its PATCH with junk first
            async with http.patch(base + location, data=rng_fragment(len(statuses)),
                                  headers={"Content-Type": "application/trickle-ice-sdpfrag"}) as reply:
                statuses.append(reply.status)
            async with http.delete(base + location) as reply:
                statuses.append(reply.status)
    return statuses


def rng_fragment(seed: int) -> str:
    rng = random.Random(SEED + seed)
    lines = [*JUNK, "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", "a=mid:0", "a=ice-ufrag:zzzz",
             "a=end-of-candidates"]
    return "\r\n".join(rng.choice(lines) for _ in range(4))


async def test_whep_answers_every_mangled_offer_clearly() -> None:
    rng = random.Random(SEED)
    good = await offer_sdp(audio=True)
    offers = [mangle(rng, good) for _ in range(40)]
    async with whep_server(max_sessions=1000) as server, aiohttp.ClientSession() as http:
        base = server.url("")
        for path in ("/whep/live", "/whep/live/compare"):
            statuses = await post_all(http, base + path, offers, base)
            assert set(statuses) <= CLEAR | {200, 204}, f"seed {SEED}: {sorted(set(statuses))}"
        assert "streamer_http_internal_errors_total 0.0" in await metrics(server), f"seed {SEED}"
        player = WhepPlayer(server.url("/whep/live"))  # still serving
        await player.start()
        try:
            assert await player.first_frame(10)
        finally:
            await player.stop()


async def test_whip_answers_every_mangled_offer_clearly() -> None:
    rng = random.Random(SEED + 1)
    publisher = Publisher("")
    good = await publisher.offer()
    await publisher.close()
    offers = [mangle(rng, good) for _ in range(30)]
    async with whip_app() as app, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{app.http.port if app.http else 0}"
        statuses = await post_all(http, base + "/whip/phone", offers, base)
        assert set(statuses) <= CLEAR | {200, 204}, f"seed {SEED}: {sorted(set(statuses))}"
        assert app.http is not None and app.http.stats.internal_errors == 0
        assert app.pipelines[0].source.publisher is None  # every accepted publisher was ended
