"""WHEP/WHIP signalling helpers: ICE configuration, trickle-ICE SDP fragments, codec choice.

What aiortc (1.x, with aioice) supports and what it does not:
- one STUN and one TURN server per connection (``RTCIceServer``); none by default here, so no public STUN
  server is contacted unless configured;
- host candidates come from every non-loopback interface address; ``restrict_host_addresses`` narrows (or,
  for 127.0.0.1, widens) that list per connection, and offers 127.0.0.1 where there is no other address;
- aioice binds each host candidate on an ephemeral UDP port; ``restrict_host_addresses`` can bind them in a
  port range instead (each session takes one free port per address), for a firewall or a Docker port
  mapping. Then no server-reflexive (STUN) candidate is gathered: advertise the address viewers reach in
  ``ice_host_addresses`` (it must be an address of this machine), or use TURN;
- no trickle of our own candidates: the answer carries them all (gathering ends before the answer).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aioice import Candidate
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import StunProtocol
from aiortc import (
    RTCConfiguration,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.sdp import candidate_from_sdp

from streamer.config import IceServerConfig
from streamer.redact import redact_text

MAX_FRAGMENT_CANDIDATES = 64
MAX_SESSION_CANDIDATES = 64  # trickled to one session over all its PATCHes
log = logging.getLogger(__name__)


class SignallingError(ValueError):
    """A client's SDP or fragment that cannot be used: answered 400 with this message."""


class Unavailable(SignallingError):
    """We cannot take the session now (no UDP port free): answered 503."""


def rtc_configuration(servers: Iterable[IceServerConfig]) -> RTCConfiguration:
    ice = [
        RTCIceServer(
            urls=list(server.urls),
            username=server.username,
            credential=server.credential.get_secret_value() if server.credential else None,
        )
        for server in servers
    ]
    return RTCConfiguration(iceServers=ice)  # an empty list: aiortc would otherwise add a public STUN server


def link_headers(servers: Iterable[IceServerConfig], credentials: bool = True) -> list[str]:
    """``Link: <url>; rel="ice-server"`` values (WHEP/WHIP): players learn our STUN/TURN servers from OPTIONS
    and from the 201. TURN credentials only with ``credentials`` (never to an unauthenticated request)."""
    links = []
    for server in servers:
        for url in server.urls:
            link = f'<{url}>; rel="ice-server"'
            if credentials and server.username and server.credential:
                secret = server.credential.get_secret_value().replace('"', "")
                link += f'; username="{server.username}"; credential="{secret}"; credential-type="password"'
            links.append(link)
    return links


def restrict_host_addresses(pc: RTCPeerConnection, addresses: list[str],
                            ports: tuple[int, int] | None = None) -> None:
    """Offer host candidates on ``addresses`` only (all interfaces but loopback when empty; loopback when the
    machine has no other address, so a viewer on the same offline machine or container still connects),
    bound in the UDP port range ``ports`` when given (call after the transceivers exist, before gathering).

    aioice has no setting for either; each connection's gatherer is told its own here (no global state is
    changed)."""
    for transceiver in pc.getTransceivers():
        connection = transceiver.sender.transport.transport.iceGatherer._connection
        original = connection.get_component_candidates
        if not isinstance(original, functools.partial):  # bundled transceivers share one gatherer
            connection.get_component_candidates = functools.partial(  # type: ignore[method-assign]
                _gather, connection, original, list(addresses), ports
            )


async def _gather(connection: Any, original: Any, chosen: list[str], ports: tuple[int, int] | None,
                  **kwargs: Any) -> list[Candidate]:
    addresses = chosen or kwargs["addresses"]
    if not addresses:  # aioice leaves loopback out: with nothing else, no candidate at all (a 503)
        log.debug("WebRTC: this machine has no address but loopback: offering 127.0.0.1")
        addresses = ["127.0.0.1"]
    if ports is None:
        kwargs["addresses"] = addresses
        return list(await original(**kwargs))
    component = kwargs["component"]
    candidates: list[Candidate] = []
    for address in addresses:
        protocol = await _bind_in_range(connection, address, ports)
        if protocol is None:
            log.warning("WebRTC: no free UDP port in server.webrtc.ice_udp_ports=%s on %s", list(ports), address)
            continue
        host, port = protocol.transport.get_extra_info("sockname")[:2]
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", host), component=component, transport="udp",
            priority=candidate_priority(component, "host"), host=host, port=port, type="host",
        )
        connection._protocols.append(protocol)
        candidates.append(protocol.local_candidate)
    kwargs["addresses"] = []  # TURN relays, if configured, as aioice makes them
    return candidates + list(await original(**kwargs))


async def _bind_in_range(connection: Any, address: str, ports: tuple[int, int]) -> StunProtocol | None:
    """A STUN protocol of ``connection`` on a free port of ``ports`` (tried from a random one on)."""
    loop = asyncio.get_running_loop()
    first, last = ports
    count = last - first + 1
    start = secrets.randbelow(count)
    for step in range(count):
        port = first + (start + step) % count
        try:
            _, protocol = await loop.create_datagram_endpoint(lambda: StunProtocol(connection),
                                                              local_addr=(address, port))
        except OSError:
            continue
        return protocol
    return None


def check_offer(text: str) -> None:
    """What aiortc does not check itself: an offer without a DTLS fingerprint or ICE credentials could never
    connect (it would fail later, silently, at the connect timeout)."""
    if not text.startswith("v=0"):
        raise SignallingError("not an SDP offer (it must start with v=0)")
    for attribute in ("a=fingerprint:", "a=ice-ufrag:", "a=ice-pwd:"):
        if f"\n{attribute}" not in text:
            raise SignallingError(f"the offer has no {attribute[2:-1]} attribute")


@dataclass(frozen=True)
class Fragment:
    """A trickle-ICE SDP fragment (RFC 8840): the remote candidates it carries."""

    candidates: list[RTCIceCandidate]
    ufrag: str | None


def parse_fragment(text: str, default_mid: str | None) -> Fragment:
    candidates: list[RTCIceCandidate] = []
    mid, ufrag = default_mid, None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("a=mid:"):
            mid = line[len("a=mid:"):]
        elif line.startswith("a=ice-ufrag:"):
            ufrag = line[len("a=ice-ufrag:"):]
        elif line.startswith("a=candidate:"):
            if len(candidates) >= MAX_FRAGMENT_CANDIDATES:
                raise SignallingError(f"more than {MAX_FRAGMENT_CANDIDATES} candidates in one fragment")
            try:
                candidate = candidate_from_sdp(line[len("a="):].removeprefix("candidate:"))
            except (ValueError, IndexError, KeyError, AssertionError) as error:  # aiortc asserts the shape
                raise SignallingError(f"bad candidate line: {error}") from None
            candidate.sdpMid = mid
            candidates.append(candidate)
    return Fragment(candidates, ufrag)


def prefer_codecs(transceiver: RTCRtpTransceiver, mime_types: tuple[str, ...] = ("video/h264",)) -> None:
    """Negotiate only these codecs, in this order (and their retransmission): aiortc would answer VP8 first.
    Sending our encoded stream needs H.264 alone; receiving a publisher takes H.264 or VP8."""
    capabilities = RTCRtpSender.getCapabilities("video")
    if capabilities is None:
        raise RuntimeError("aiortc offers no video codecs")
    codecs = [codec for mime in mime_types for codec in capabilities.codecs if codec.mimeType.lower() == mime]
    transceiver.setCodecPreferences(codecs + [codec for codec in capabilities.codecs
                                              if codec.mimeType.lower() == "video/rtx"])


async def answer(pc: RTCPeerConnection, video: RTCRtpTransceiver, offer: str, host_addresses: list[str],
                 ports: tuple[int, int] | None, directions: tuple[str, ...], refusal: str) -> None:
    """Apply the client's ``offer`` and make our answer (all candidates gathered): ``video`` (added
    before) takes the offer's video section, every other section is answered inactive. ``SignallingError``
    when the offer cannot work, or its video section does not end in one of ``directions``."""
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    except Exception as error:  # aiortc raises many kinds on a malformed offer: all are the client's
        raise SignallingError(f"unusable offer: {redact_text(str(error))[:200] or type(error).__name__}") from None
    if video.mid is None:
        raise SignallingError("the offer has no video section")
    for transceiver in pc.getTransceivers():  # nothing sent or received there (aiortc would queue what
        if transceiver is not video:          # it receives without bound if nobody read it)
            transceiver.direction = "inactive"
    restrict_host_addresses(pc, host_addresses, ports)
    try:
        local = await pc.createAnswer()
    except Exception as error:  # aiortc accepted the offer but cannot answer it (e.g. no direction in a section)
        raise SignallingError(f"cannot answer this offer: {redact_text(str(error))[:200] or type(error).__name__}") from None
    await pc.setLocalDescription(local)
    if video.currentDirection not in directions:
        raise SignallingError(refusal)
    if "a=candidate:" not in pc.localDescription.sdp:
        raise Unavailable("no ICE candidate could be gathered (see server.webrtc.ice_host_addresses, "
                          "ice_udp_ports and the log)")


async def close_peer(pc: RTCPeerConnection) -> None:
    """Close ``pc``; aiortc can fail to close a connection left half set up by a bad offer: that is logged
    (debug) and ignored, its sockets are closed with what aiortc did close."""
    try:
        await pc.close()
    except Exception as error:
        log.debug("closing a peer connection: %s: %s", type(error).__name__, error)
