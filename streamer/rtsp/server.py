"""An asyncio RTSP server (RFC 2326) for restored streams: TCP interleaved and UDP unicast playback."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from urllib.parse import urlsplit

from streamer.config import RtspServerConfig
from streamer.hub import StreamHub
from streamer.rtsp.auth import Authenticator
from streamer.rtsp.messages import (
    BadRequest,
    InterleavedFrame,
    Request,
    format_response,
    parse_channel_pair,
    parse_port_pair,
    parse_transport,
    read_message,
)
from streamer.rtsp.sdp import TRACK, build_sdp
from streamer.rtsp.session import RtspSession, TcpTransport, open_udp_transport

log = logging.getLogger(__name__)

PUBLIC_METHODS = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
READY_TIMEOUT_S = 10.0
SOCKET_SEND_BUFFER = 256 * 1024


class RtspServer:
    def __init__(self, config: RtspServerConfig, hubs: dict[str, StreamHub]) -> None:
        self.config = config
        self.hubs = hubs
        self.sessions: dict[str, RtspSession] = {}
        self.auth = Authenticator(config.auth) if config.auth else None
        self.requests = 0
        self.bad_requests = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self.config.port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, self.config.host, self.config.port, limit=8192, reuse_address=True
        )
        self._reaper = asyncio.create_task(self._reap_loop(), name="rtsp-reaper")
        log.info("RTSP server listening on %s:%d", self.config.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._reaper is not None:
            self._reaper.cancel()
        for session in list(self.sessions.values()):
            session.end()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=2)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2)
            except asyncio.TimeoutError:
                pass

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.expired(now):
                    log.info("rtsp session %s timed out", session.id)
                    session.end()

    def _forget(self, session: RtspSession) -> None:
        self.sessions.pop(session.id, None)

    # -- connections -----------------------------------------------------------------------------------
    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        self.connections += 1
        peer = writer.get_extra_info("peername") or ("?", 0)
        sock = writer.get_extra_info("socket")
        if sock is not None:  # bounded kernel buffering: a stalled viewer shows up as drops, not as latency
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SEND_BUFFER)
        writer.transport.set_write_buffer_limits(high=SOCKET_SEND_BUFFER)
        owned: set[str] = set()
        try:
            while True:
                try:
                    message = await read_message(reader)
                except BadRequest as error:
                    self.bad_requests += 1
                    log.info("rtsp: closing connection from %s: %s", peer[0], error)
                    writer.write(format_response(error.status, "", {"Connection": "close"}))
                    break
                if message is None:
                    break
                if isinstance(message, InterleavedFrame):
                    for session_id in owned:  # RTCP receiver reports keep sessions alive
                        if session_id in self.sessions:
                            self.sessions[session_id].touch()
                    continue
                self.requests += 1
                try:
                    response = await self._handle(message, writer, peer[0], owned)
                except BadRequest as error:
                    self.bad_requests += 1
                    response = format_response(error.status, message.cseq)
                    if error.fatal:
                        writer.write(response)
                        break
                writer.write(response)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("rtsp connection from %s failed", peer[0])
        finally:
            for session_id in owned:
                session = self.sessions.get(session_id)
                if session is not None and not isinstance(session.transport, TcpTransport | None):
                    continue  # UDP sessions outlive their control connection until timeout/TEARDOWN
                if session is not None:
                    session.end()
            writer.close()
            if task is not None:
                self._connections.discard(task)

    # -- requests --------------------------------------------------------------------------------------
    async def _handle(self, request: Request, writer: asyncio.StreamWriter, host: str, owned: set[str]) -> bytes:
        if not request.cseq:
            raise BadRequest(400, "missing CSeq", fatal=False)
        if request.method == "OPTIONS":
            return format_response(200, request.cseq, {"Public": PUBLIC_METHODS})
        if self.auth is not None and not self.auth.check(request.method, request.header("authorization")):
            return format_response(401, request.cseq, {"WWW-Authenticate": self.auth.challenge()})
        handler = {
            "DESCRIBE": self._describe,
            "SETUP": self._setup,
            "PLAY": self._play,
            "PAUSE": self._pause,
            "TEARDOWN": self._teardown,
            "GET_PARAMETER": self._keepalive,
            "SET_PARAMETER": self._keepalive,
        }.get(request.method)
        if handler is None:
            return format_response(501, request.cseq, {"Public": PUBLIC_METHODS})
        return await handler(request, writer, host, owned)

    def _stream_name(self, url: str) -> tuple[str, str]:
        if len(url) > 2048:
            raise BadRequest(414, "URL too long", fatal=False)
        try:
            path = urlsplit(url).path if "://" in url else url
        except ValueError:
            raise BadRequest(400, "bad URL", fatal=False) from None
        parts = [part for part in path.split("/") if part]
        if not parts:
            raise BadRequest(404, "no stream named", fatal=False)
        name = parts[0]
        if name not in self.hubs:
            raise BadRequest(404, f"no stream {name!r}", fatal=False)
        return name, "/".join(parts[1:])

    def _session(self, request: Request, owned: set[str]) -> RtspSession:
        session_id = request.header("session").split(";", 1)[0].strip()
        session = self.sessions.get(session_id)
        if session is None:
            raise BadRequest(454, "session not found", fatal=False)
        session.touch()
        owned.add(session.id)
        return session

    async def _describe(self, request: Request, writer: asyncio.StreamWriter, host: str, owned: set[str]) -> bytes:
        name, _ = self._stream_name(request.url)
        hub = self.hubs[name]
        if not await hub.wait_ready(READY_TIMEOUT_S) or hub.parameter_sets is None:
            raise BadRequest(503, "stream not ready", fatal=False)
        local_host = writer.get_extra_info("sockname")[0]
        sdp = build_sdp(name, local_host, hub.parameter_sets, hub.fps_estimate).encode()
        base = request.url.split("?", 1)[0].rstrip("/") + "/"
        headers = {"Content-Base": base, "Content-Type": "application/sdp"}
        return format_response(200, request.cseq, headers, sdp)

    async def _setup(self, request: Request, writer: asyncio.StreamWriter, host: str, owned: set[str]) -> bytes:
        name, track = self._stream_name(request.url)
        if track not in ("", TRACK):
            raise BadRequest(404, f"no track {track!r}", fatal=False)
        if request.header("session"):
            raise BadRequest(459, "one track per session", fatal=False)
        if len(self.sessions) >= self.config.max_viewers:
            raise BadRequest(453, "too many viewers", fatal=False)
        hub = self.hubs[name]
        if not await hub.wait_ready(READY_TIMEOUT_S):
            raise BadRequest(503, "stream not ready", fatal=False)
        transport = parse_transport(request.header("transport"))
        if "multicast" in transport:
            raise BadRequest(461, "multicast not offered", fatal=False)
        session = RtspSession(hub, self.config.viewer_queue, self.config.session_timeout_s, self._forget)
        if transport["protocol"] == "RTP/AVP/TCP":
            rtp_channel, rtcp_channel = parse_channel_pair(transport.get("interleaved", "0-1"))
            session.transport = TcpTransport(writer, rtp_channel, rtcp_channel)
            reply = f"RTP/AVP/TCP;unicast;interleaved={rtp_channel}-{rtcp_channel};ssrc={session.rtp.ssrc:08X}"
        elif transport["protocol"] in ("RTP/AVP", "RTP/AVP/UDP") and self.config.udp:
            if "client_port" not in transport:
                raise BadRequest(461, "client_port missing", fatal=False)
            client_ports = parse_port_pair(transport["client_port"])
            bind_host = writer.get_extra_info("sockname")[0]
            session.transport = await open_udp_transport(bind_host, host, client_ports, session.touch)
            server_ports = session.transport.server_ports
            reply = (
                f"RTP/AVP;unicast;client_port={client_ports[0]}-{client_ports[1]};"
                f"server_port={server_ports[0]}-{server_ports[1]};ssrc={session.rtp.ssrc:08X}"
            )
        else:
            raise BadRequest(461, f"unsupported transport {transport['protocol'][:40]}", fatal=False)
        self.sessions[session.id] = session
        owned.add(session.id)
        headers = {"Transport": reply, "Session": f"{session.id};timeout={int(self.config.session_timeout_s)}"}
        return format_response(200, request.cseq, headers)

    async def _play(self, request: Request, writer: asyncio.StreamWriter, host: str, owned: set[str]) -> bytes:
        session = self._session(request, owned)
        track_url = request.url.split("?", 1)[0].rstrip("/")
        if not track_url.endswith(TRACK):
            track_url = f"{track_url}/{TRACK}"
        timestamp = session.hub.last_timestamp or 0.0
        rtp_info = f"url={track_url};seq={session.rtp.sequence};rtptime={session.rtp.rtp_timestamp(timestamp)}"
        session.play()
        headers = {"Session": session.id, "Range": "npt=0.000-", "RTP-Info": rtp_info}
        return format_response(200, request.cseq, headers)

    async def _pause(self, request: Request, writer: asyncio.StreamWriter, host: str, owned: set[str]) -> bytes:
        self._session(request, owned)
        raise BadRequest(455, "live streams cannot pause", fatal=False)

    async def _teardown(self, request: Request, writer: asyncio.StreamWriter, host: str, owned: set[str]) -> bytes:
        session = self._session(request, owned)
        owned.discard(session.id)
        session.end()
        return format_response(200, request.cseq, {"Session": session.id})

    async def _keepalive(self, request: Request, writer: asyncio.StreamWriter, host: str, owned: set[str]) -> bytes:
        if request.header("session"):
            self._session(request, owned)
        return format_response(200, request.cseq)
