"""WHIP ingest (RFC 9725): a browser or OBS publishes a camera over WebRTC.

    OPTIONS /whip/<camera>          204, Accept-Post: application/sdp (no token needed: CORS preflight)
    POST    /whip/<camera>          application/sdp offer (H.264 or VP8) -> 201, Location, ETag, answer;
                                    409 while another publisher holds the path, 401 without its token
    PATCH   /whip/sessions/<id>     trickled candidates -> 204
    DELETE  /whip/sessions/<id>     the publisher leaves

The camera must be configured with ``source: {type: whip}``. The answer carries all our candidates
(aiortc gathers before answering), which suits OBS (it sends its offer without trickling). The
publisher's track is read continuously by one task (aiortc queues what nobody reads without bound) and
its frames go to the camera's source through a small bounded queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from streamer.config import WebRtcServerConfig
from streamer.sources.whip import WhipSource
from streamer.webrtc.sessions import SessionRegistry
from streamer.webrtc.signalling import (
    SignallingError,
    Unavailable,
    answer,
    check_offer,
    close_peer,
    prefer_codecs,
    rtc_configuration,
)
from streamer.webrtc.whep import (
    PREFLIGHT,
    SDP,
    SDP_FRAGMENT,
    created,
    delete_session,
    json_error,
    patch_session,
    read_offer,
)

log = logging.getLogger(__name__)


@dataclass
class WhipStats:
    started: int = 0  # publishers answered (201)
    conflicts: int = 0  # offers refused because the path had a publisher (409)
    bad_offers: int = 0  # offers refused as unusable (4xx)
    auth_failures: int = 0  # offers without the path's token (401)


class WhipSession:
    """One publisher: its peer connection and the task reading its video. ``close`` is idempotent."""

    def __init__(self, session_id: str, source: WhipSource, pc: RTCPeerConnection) -> None:
        self.id = session_id
        self.source = source
        self.pc = pc
        self.etag = f'"{secrets.token_hex(8)}"'
        self.reader: asyncio.Task[None] | None = None
        self.video_mid: str | None = None
        self.candidates = 0
        self.closed = False
        self.dropped = 0  # a publisher's dropped frames are its camera's (streamer_whip_dropped_frames)

    @property
    def label(self) -> str:
        return f"WHIP publisher {self.id[:8]} of {self.source.name}"

    @property
    def stream(self) -> str:
        return self.source.name

    async def read(self, track: Any) -> None:
        """Every decoded frame of the publisher, at once, to the source (which keeps a bounded queue)."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.source.offer(self.id, frame)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.source.detach(self.id)
        if self.reader is not None:
            self.reader.cancel()
        await close_peer(self.pc)


class WhipService:
    """The WHIP routes for every camera whose source is ``whip``."""

    def __init__(self, config: WebRtcServerConfig, sources: Mapping[str, WhipSource], api_token: str | None) -> None:
        self.config = config
        self.sources = sources  # a live view of the stream registry: cameras come and go at run time
        self.registry: SessionRegistry[WhipSession] = SessionRegistry(config.connect_timeout_s)
        self.sessions = self.registry.sessions
        self.stats = WhipStats()
        self._api_token = hashlib.sha256(api_token.encode()).digest() if api_token else None  # unknown names

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("OPTIONS", "/whip/sessions/{session}", self.options)
        router.add_patch("/whip/sessions/{session}", self.patch)
        router.add_delete("/whip/sessions/{session}", self.delete)
        router.add_route("OPTIONS", "/whip/{name}", self.options)
        router.add_post("/whip/{name}", self.offer)

    async def options(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={**PREFLIGHT, "Accept-Post": SDP, "Accept-Patch": SDP_FRAGMENT})

    def open_cameras(self) -> list[str]:
        """The cameras that take a publisher without a token."""
        return [name for name in self.sources if self._expected_token(name) is None]

    def _expected_token(self, name: str) -> bytes | None:
        """The SHA-256 of the token a publisher to ``name`` must show: the camera's own, else the API's."""
        source = self.sources.get(name)
        token = source.config.token.get_secret_value() if source is not None and source.config.token else ""
        return hashlib.sha256(token.encode()).digest() if token else self._api_token

    def _authorized(self, name: str, request: web.Request) -> bool:
        expected = self._expected_token(name)
        if expected is None:
            return True
        scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").strip().partition(" ")
        given = hashlib.sha256(credentials.strip().encode("utf-8", "surrogateescape")).digest()
        return scheme.lower() == "bearer" and bool(credentials) and hmac.compare_digest(given, expected)

    async def offer(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not self._authorized(name, request):  # before the 404: no camera names without a token
            self.stats.auth_failures += 1
            return json_error(401, "unauthorized", {hdrs.WWW_AUTHENTICATE: 'Bearer realm="whip"'})
        source = self.sources.get(name)
        if source is None:
            return json_error(404, f"no camera {name!r} takes WHIP publishers (source type whip)")
        text = await read_offer(request)
        if isinstance(text, web.Response):
            self.stats.bad_offers += 1
            return text
        if source.publisher is not None:
            self.stats.conflicts += 1
            return json_error(409, f"{name!r} already has a publisher")
        try:
            session = await self._answer(source, text)
        except Unavailable as error:
            return json_error(503, str(error), {"Retry-After": "5"})
        except SignallingError as error:
            self.stats.bad_offers += 1
            return json_error(400, str(error))
        if session is None:
            self.stats.conflicts += 1
            return json_error(409, f"{name!r} already has a publisher")
        self.stats.started += 1
        log.info("%s: session started", session.label)
        return created(f"/whip/sessions/{session.id}", session.etag, session.pc.localDescription.sdp,
                       self.config.ice_servers)

    async def _answer(self, source: WhipSource, offer: str) -> WhipSession | None:
        check_offer(offer)
        session_id = secrets.token_hex(16)
        pc = RTCPeerConnection(rtc_configuration(self.config.ice_servers))
        session = WhipSession(session_id, source, pc)
        try:
            video = pc.addTransceiver("video", direction="recvonly")
            prefer_codecs(video, ("video/h264", "video/vp8"))
            await answer(pc, video, offer, self.config.ice_host_addresses, self.config.udp_ports,
                         ("recvonly", "sendrecv"),
                         "the offer does not send video (its video section must be sendonly)")
            if not source.attach(session_id):  # another publisher won the race while we negotiated
                await session.close()
                return None
        except BaseException:
            await session.close()
            raise
        session.video_mid = video.mid
        track = video.receiver.track
        session.reader = asyncio.get_running_loop().create_task(session.read(track))
        if not await self.registry.add(session):
            raise Unavailable("the server is shutting down")
        return session

    async def patch(self, request: web.Request) -> web.Response:
        return await patch_session(request, self.registry)

    async def delete(self, request: web.Request) -> web.Response:
        return await delete_session(request, self.registry, "publisher")

    async def close(self) -> None:
        await self.registry.close()
