"""WHEP egress (RFC 9725 style): a player POSTs an SDP offer, gets an answer and a session URL.

    OPTIONS /whep/<stream>          204, Accept-Post: application/sdp, Link: <stun:…>; rel="ice-server"
    POST    /whep/<stream>          application/sdp offer -> 201, Location, ETag, application/sdp answer
    POST    /whep/<stream>/raw      the camera as it arrives; /whep/<stream>/compare: raw | restored
    PATCH   /whep/sessions/<id>     application/trickle-ice-sdpfrag (If-Match: * or the ETag) -> 204
    DELETE  /whep/sessions/<id>     -> 200; the session ends (again: 404)

Every viewer gets the stream's own encoded access units (``EncodedVideoTrack``): nothing is re-encoded
per viewer. PLI/FIR from a viewer reach the shared encoder as rate-limited IDR requests.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import hdrs, web
from aiortc import RTCPeerConnection

from streamer.config import IceServerConfig, WebRtcServerConfig
from streamer.hub import StreamHub
from streamer.webrtc.sessions import SessionRegistry
from streamer.webrtc.signalling import (
    MAX_SESSION_CANDIDATES,
    SignallingError,
    Unavailable,
    answer,
    check_offer,
    close_peer,
    link_headers,
    parse_fragment,
    prefer_codecs,
    rtc_configuration,
)
from streamer.webrtc.track import EncodedVideoTrack

log = logging.getLogger(__name__)

SDP = "application/sdp"
SDP_FRAGMENT = "application/trickle-ice-sdpfrag"
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Patch, Accept-Post",
}
PREFLIGHT = {
    **CORS,
    "Access-Control-Allow-Methods": "OPTIONS, POST, PATCH, DELETE",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Max-Age": "600",
}
READY_TIMEOUT_S = 5.0
MAX_SDP_BYTES = 32768


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers={**CORS, **(headers or {})})


class TrickleSession(Protocol):
    pc: RTCPeerConnection
    etag: str
    candidates: int  # remote candidates taken so far (at most MAX_SESSION_CANDIDATES)

    @property
    def video_mid(self) -> str | None: ...


async def trickle(request: web.Request, session: TrickleSession) -> web.Response:
    """A PATCH with the peer's trickled ICE candidates (WHEP and WHIP alike)."""
    pc, etag = session.pc, session.etag
    if request.content_type != SDP_FRAGMENT:
        return json_error(415, f"PATCH takes {SDP_FRAGMENT}", {"Accept-Patch": SDP_FRAGMENT})
    match = request.headers.get(hdrs.IF_MATCH)
    if match is not None and match.strip() not in ("*", etag):
        return json_error(412, "If-Match does not name this session's ICE session")
    try:
        fragment = parse_fragment((await request.read()).decode("utf-8", "replace"), session.video_mid)
    except SignallingError as error:
        return json_error(400, str(error))
    if session.candidates + len(fragment.candidates) > MAX_SESSION_CANDIDATES:
        return json_error(400, f"more than {MAX_SESSION_CANDIDATES} candidates in one session")
    session.candidates += len(fragment.candidates)
    remote = pc.remoteDescription
    if fragment.ufrag is not None and remote is not None and f"a=ice-ufrag:{fragment.ufrag}" not in remote.sdp:
        return json_error(501, "ICE restarts are not supported: make a new session")
    for candidate in fragment.candidates:
        with contextlib.suppress(ValueError, KeyError, AttributeError):  # an unusable candidate is ignored
            await pc.addIceCandidate(candidate)
    return web.Response(status=204, headers=CORS)


async def patch_session(request: web.Request, registry: SessionRegistry[Any]) -> web.Response:
    """PATCH on a session's URL (WHEP and WHIP alike): the peer's trickled candidates, 404 for no such session."""
    session = registry.sessions.get(request.match_info["session"])
    if session is None:
        return json_error(404, "no such session")
    return await trickle(request, session)


async def delete_session(request: web.Request, registry: SessionRegistry[Any], peer: str) -> web.Response:
    """DELETE on a session's URL (WHEP and WHIP alike): end it (a second DELETE finds nothing: 404)."""
    session = registry.sessions.get(request.match_info["session"])
    if session is None:
        return json_error(404, "no such session")
    log.info("%s: ended by the %s", session.label, peer)
    await registry.end(session)
    return web.Response(status=200, headers=CORS)


async def read_offer(request: web.Request) -> str | web.Response:
    """The offer's text, or the error answer for a wrong content type or size."""
    if request.content_type != SDP:
        return json_error(415, f"the offer must be {SDP}", {"Accept-Post": SDP})
    if request.content_length is not None and request.content_length > MAX_SDP_BYTES:
        return json_error(413, f"offer over {MAX_SDP_BYTES} bytes")
    body = b""  # a chunked body declares no length: read one byte past the limit at most
    while len(body) <= MAX_SDP_BYTES and (chunk := await request.content.read(MAX_SDP_BYTES + 1 - len(body))):
        body += chunk
    if len(body) > MAX_SDP_BYTES:
        response = json_error(413, f"offer over {MAX_SDP_BYTES} bytes")
        response.force_close()  # the rest of the body is never read
        return response
    return body.decode("utf-8", "replace")


def created(location: str, etag: str, answer: str, servers: list[IceServerConfig]) -> web.Response:
    """201 with the session's URL, its ETag and the SDP answer (and the ICE servers as Link headers)."""
    headers: Any = {**CORS, hdrs.LOCATION: location, hdrs.ETAG: etag, "Accept-Patch": SDP_FRAGMENT}
    response = web.Response(status=201, body=answer.encode(), content_type=SDP, headers=headers)
    for link in link_headers(servers):
        response.headers.add(hdrs.LINK, link)
    return response


@dataclass
class WhepStats:
    started: int = 0  # sessions answered (201)
    refused: int = 0  # offers refused at max_sessions or before the stream had a picture (503)
    bad_offers: int = 0  # offers refused as unusable (400/415)
    keyframe_requests: int = 0  # PLI/FIR from viewers, passed on to the encoder (rate-limited there)


class WhepSession:
    """One viewer: its peer connection and its track. ``close`` is idempotent."""

    def __init__(self, session_id: str, stream: str, pc: RTCPeerConnection, track: EncodedVideoTrack) -> None:
        self.id = session_id
        self.stream = stream
        self.pc = pc
        self.track = track
        self.etag = f'"{secrets.token_hex(8)}"'
        self.created = time.monotonic()
        self.candidates = 0
        self.closed = False

    @property
    def label(self) -> str:
        return f"WebRTC viewer {self.id[:8]} of {self.stream}"

    @property
    def dropped(self) -> int:
        return self.track.dropped

    @property
    def video_mid(self) -> str | None:
        transceiver = next((t for t in self.pc.getTransceivers() if t.sender.track is self.track), None)
        return transceiver.mid if transceiver else None

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.track.stop()
        await close_peer(self.pc)


class WhepService:
    """The WHEP routes and the sessions they made, for every stream in ``hubs``."""

    def __init__(self, config: WebRtcServerConfig, hubs: Mapping[str, StreamHub], open_access: bool = True) -> None:
        self.config = config
        self.open_access = open_access  # no HTTP token: OPTIONS may carry TURN credentials (else only the 201)
        self.hubs = hubs  # a live view of the stream registry (cameras and their views by path)
        self.registry: SessionRegistry[WhepSession] = SessionRegistry(config.connect_timeout_s)
        self.stats = WhepStats()
        self.pending = 0  # offers past the max_sessions check, not answered yet (they hold a slot)

    @property
    def sessions(self) -> dict[str, WhepSession]:
        return self.registry.sessions

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("OPTIONS", "/whep/sessions/{session}", self.options)
        router.add_patch("/whep/sessions/{session}", self.patch)
        router.add_delete("/whep/sessions/{session}", self.delete)
        router.add_route("OPTIONS", "/whep/{stream}", self.options)
        router.add_post("/whep/{stream}", self.offer)
        router.add_route("OPTIONS", "/whep/{stream}/{view}", self.options)
        router.add_post("/whep/{stream}/{view}", self.offer)

    def viewers(self, stream: str) -> int:
        return sum(1 for session in self.sessions.values() if session.stream == stream)

    async def options(self, request: web.Request) -> web.Response:
        headers: Any = {**PREFLIGHT, "Accept-Post": SDP, "Accept-Patch": SDP_FRAGMENT}
        response = web.Response(status=204, headers=headers)
        for link in link_headers(self.config.ice_servers, credentials=self.open_access):  # OPTIONS needs no token
            response.headers.add(hdrs.LINK, link)
        return response

    async def offer(self, request: web.Request) -> web.Response:
        camera = request.match_info["stream"]
        view = request.match_info.get("view")
        stream = f"{camera}/{view}" if view else camera
        hub, camera_hub = self.hubs.get(stream), self.hubs.get(camera)
        if hub is None or camera_hub is None:
            return json_error(404, f"no stream named {stream!r}")
        text = await read_offer(request)
        if isinstance(text, web.Response):
            self.stats.bad_offers += 1
            return text
        if len(self.sessions) + self.pending >= self.config.max_sessions:
            self.stats.refused += 1
            return json_error(503, f"at server.webrtc.max_sessions={self.config.max_sessions}", {"Retry-After": "5"})
        self.pending += 1  # reserved before any await: parallel offers cannot all pass the check
        try:
            return await self._start(stream, hub, camera_hub, text)
        finally:
            self.pending -= 1

    async def _start(self, stream: str, hub: StreamHub, camera_hub: StreamHub, text: str) -> web.Response:
        if not await camera_hub.wait_ready(READY_TIMEOUT_S):  # a view starts encoding once it is watched
            self.stats.refused += 1
            return json_error(503, f"stream {stream!r} has no picture yet", {"Retry-After": "2"})
        try:
            session = await self._answer(stream, hub, text)
        except Unavailable as error:
            return json_error(503, str(error), {"Retry-After": "5"})
        except SignallingError as error:
            self.stats.bad_offers += 1
            return json_error(400, str(error))
        self.stats.started += 1
        return created(f"/whep/sessions/{session.id}", session.etag, session.pc.localDescription.sdp,
                       self.config.ice_servers)

    async def _answer(self, stream: str, hub: StreamHub, offer: str) -> WhepSession:
        check_offer(offer)
        session_id = secrets.token_hex(16)
        pc = RTCPeerConnection(rtc_configuration(self.config.ice_servers))
        track = EncodedVideoTrack(hub, self.config.viewer_queue, f"whep-{session_id[:8]}")
        session = WhepSession(session_id, stream, pc, track)
        try:
            video = pc.addTransceiver(track, direction="sendonly")
            prefer_codecs(video)
            await answer(pc, video, offer, self.config.ice_host_addresses, self.config.udp_ports,
                         ("sendonly", "sendrecv"),
                         "the offer does not receive video (its video section must be recvonly)")
        except BaseException:
            await session.close()
            raise
        video.sender._send_keyframe = self._keyframe_request(hub)  # type: ignore[method-assign]
        if not await self.registry.add(session):
            raise Unavailable("the server is shutting down")
        log.info("%s: session started", session.label)
        return session

    def _keyframe_request(self, hub: StreamHub) -> Callable[[], None]:
        def request() -> None:  # aiortc's sender calls this on PLI/FIR (it cannot make a keyframe itself)
            self.stats.keyframe_requests += 1
            hub.request_keyframe()

        return request

    async def patch(self, request: web.Request) -> web.Response:
        return await patch_session(request, self.registry)

    async def delete(self, request: web.Request) -> web.Response:
        return await delete_session(request, self.registry, "player")

    async def close(self) -> None:
        await self.registry.close()
