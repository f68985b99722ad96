"""An asyncio RTSP server (RFC 2326) for restored streams: TCP interleaved and UDP unicast playback.

Hardened after MediaMTX/live555: bounded connections (total and per address, idle ones evicted first), an
idle timeout and a request timeout (slowloris), bounded request sizes (``messages``), bounded sessions
(``limits``), per-connection Digest nonces and a brake on password guessing (``auth``). An exception that
reaches a catch-all is an internal error: logged with its traceback and counted.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlsplit

from streamer.config import RtspServerConfig
from streamer.hub import StreamHub
from streamer.rtsp.auth import Authenticator, AuthResult, GuessBrake
from streamer.rtsp.limits import Connection, ConnectionTable, RtspCounters, SessionLimits
from streamer.rtsp.messages import (
    BadRequest,
    BlankLine,
    InterleavedFrame,
    Request,
    format_response,
    parse_channel_pair,
    parse_port_pair,
    parse_transport,
    read_message,
)
from streamer.rtsp.sdp import TRACK, build_sdp
from streamer.rtsp.session import RtspSession, TcpTransport, UdpTransport, open_udp_transport

log = logging.getLogger(__name__)

PUBLIC_METHODS = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
READY_TIMEOUT_S = 10.0
SOCKET_SEND_BUFFER = 256 * 1024
REAP_INTERVAL_S = 0.5

Handler = Callable[[Request, Connection], Awaitable[bytes]]


def reply(writer: asyncio.StreamWriter, data: bytes) -> bool:
    """Send a response unless the connection has closed meanwhile (False then): a request read in the same pass
    as the client's reset, or before a failed RTP write closed the transport, has nobody to answer (uvloop
    raises on such a write; it is not a server error)."""
    if writer.is_closing():
        return False
    writer.write(data)
    return True


class RtspServer:
    def __init__(self, config: RtspServerConfig, hubs: Mapping[str, StreamHub]) -> None:
        self.config = config
        self.hubs = hubs  # a live view of the stream registry: looked up per request
        self.sessions: dict[str, RtspSession] = {}
        self.counters = RtspCounters()
        self.connections = ConnectionTable(config, self.counters)
        self.session_limits = SessionLimits(config, self.sessions, self.counters)
        self.auth = Authenticator(config.auth) if config.auth else None
        self.brake = GuessBrake(config.auth.max_failures, config.auth.lockout_s) if config.auth else None
        self._server: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, Handler] = {
            "DESCRIBE": self._describe,
            "SETUP": self._setup,
            "PLAY": self._play,
            "PAUSE": self._pause,
            "TEARDOWN": self._teardown,
            "GET_PARAMETER": self._keepalive,
            "SET_PARAMETER": self._keepalive,
        }

    @property
    def requests(self) -> int:
        return self.counters.requests

    @property
    def bad_requests(self) -> int:
        return self.counters.bad_requests

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
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2)
            except asyncio.TimeoutError:
                pass

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            try:
                self.session_limits.expire(time.monotonic())
            except Exception:  # never let the reaper die: sessions would stop expiring
                self.counters.internal_errors += 1
                log.exception("rtsp session reaper failed")

    def _internal_error(self) -> None:
        self.counters.internal_errors += 1

    def end_stream(self, name: str) -> int:
        """A stream was removed: end its sessions and close the connections that carried them (RTSP 1.0 has
        no server-sent TEARDOWN; the viewer sees the connection end, as MediaMTX does it)."""
        sessions = [session for session in self.sessions.values() if session.hub.name == name]
        for session in sessions:
            owner = session.owner
            session.end()
            if owner is not None and not owner.sessions:
                owner.writer.close()
        return len(sessions)

    def _forget(self, session: RtspSession) -> None:
        self.sessions.pop(session.id, None)
        if session.owner is not None:
            session.owner.sessions.discard(session)

    # -- connections -----------------------------------------------------------------------------------
    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters.connections += 1
        peer = writer.get_extra_info("peername")
        conn = Connection(str(peer[0]) if peer else "?", writer)
        if not self.connections.admit(conn):
            conn.abort()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:  # bounded kernel buffering: a stalled viewer shows up as drops, not latency
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SEND_BUFFER)
            writer.transport.set_write_buffer_limits(high=SOCKET_SEND_BUFFER)
            await self._serve(conn, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            self.counters.internal_errors += 1
            log.exception("rtsp connection from %s failed", conn.host)
        finally:
            self._close(conn)
            if task is not None:
                self._tasks.discard(task)

    def _close(self, conn: Connection) -> None:
        self.connections.remove(conn)
        for session in list(conn.sessions):
            if session.playing and isinstance(session.transport, UdpTransport):
                session.owner = None  # a playing UDP session outlives its connection until timeout/TEARDOWN
            else:
                session.end()
        conn.sessions.clear()
        conn.closed = True
        conn.writer.close()

    async def _next_message(
        self, conn: Connection, reader: asyncio.StreamReader
    ) -> Request | InterleavedFrame | BlankLine | None:
        """The next message, None at end of stream or when the connection idled out (no request for
        idle_timeout_s while it plays nothing). A started message must be complete within request_timeout_s."""
        while True:
            remaining = conn.last_request + self.config.idle_timeout_s - time.monotonic()
            try:
                first = await asyncio.wait_for(reader.readexactly(1), max(remaining, 0.0))
                break
            except asyncio.TimeoutError:
                if not conn.playing:
                    self.counters.idle_timeouts += 1
                    log.debug("rtsp: closing idle connection from %s", conn.host)
                    return None
                conn.touch()  # a playing viewer may stay silent (TCP, no RTCP): start another round
            except asyncio.IncompleteReadError:
                return None
        try:
            return await asyncio.wait_for(read_message(reader, first), self.config.request_timeout_s)
        except asyncio.TimeoutError:
            self.counters.request_timeouts += 1
            raise BadRequest(408, "request not complete in time") from None

    async def _serve(self, conn: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                message = await self._next_message(conn, reader)
            except BadRequest as error:
                if error.status != 408:
                    self.counters.bad_requests += 1
                log.debug("rtsp: closing connection from %s: %s", conn.host, error)  # counted, not logged
                reply(writer, format_response(error.status, "", {"Connection": "close"}))
                return
            if message is None:
                return
            if isinstance(message, BlankLine):
                continue
            if isinstance(message, InterleavedFrame):
                for session in conn.sessions:  # RTCP receiver reports keep sessions alive
                    session.touch()
                continue
            conn.touch()
            self.counters.requests += 1
            try:
                response = await self._handle(message, conn)
            except BadRequest as error:
                self.counters.bad_requests += 1
                response = format_response(error.status, message.cseq)
                if error.fatal:
                    reply(writer, response)
                    return
            if not reply(writer, response):
                return  # the client has gone (a viewer's TEARDOWN, then its reset, read together)
            # a client that never reads its responses is dropped
            await asyncio.wait_for(writer.drain(), self.config.request_timeout_s)

    # -- requests --------------------------------------------------------------------------------------
    async def _handle(self, request: Request, conn: Connection) -> bytes:
        if not request.cseq:
            raise BadRequest(400, "missing or malformed CSeq", fatal=False)
        if request.method == "OPTIONS":
            return format_response(200, request.cseq, {"Public": PUBLIC_METHODS})
        handler = self._handlers.get(request.method)
        if handler is None:
            return format_response(501, request.cseq, {"Public": PUBLIC_METHODS})
        refusal = self._authorize(request, conn)
        if refusal is not None:
            return refusal
        return await handler(request, conn)

    def _authorize(self, request: Request, conn: Connection) -> bytes | None:
        """None when the request may proceed, else the response refusing it."""
        if self.auth is None or self.brake is None:
            return None
        if not conn.authenticated and self.brake.locked(conn.host):
            self.counters.auth_locked_requests += 1
            return format_response(403, request.cseq)
        result = self.auth.check(request.method, request.url, request.header("authorization"), conn.key)
        if result is AuthResult.OK or (result is AuthResult.STALE and request.method == "TEARDOWN"):
            # An expired nonce of this very connection still ends a session: clients leaving do not retry.
            conn.authenticated = True
            return None
        if result is AuthResult.FAILED:
            self.counters.auth_failures += 1
            if self.brake.fail(conn.host):
                self.counters.auth_lockouts += 1
                log.warning("rtsp: %s locked out for %.0f s after %d failed logins (server.rtsp.auth.max_failures)",
                            conn.host, self.brake.lockout_s, self.brake.max_failures)
        challenge = self.auth.challenge(conn.key, stale=result in (AuthResult.STALE, AuthResult.FOREIGN))
        return format_response(401, request.cseq, {"WWW-Authenticate": challenge})

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
            raise BadRequest(404, "no such stream", fatal=False)
        return name, "/".join(parts[1:])

    def _session(self, request: Request, conn: Connection) -> RtspSession:
        session_id = request.header("session").split(";", 1)[0].strip()
        session = self.sessions.get(session_id)
        if session is None:
            raise BadRequest(454, "session not found", fatal=False)
        session.touch()
        if session.owner is None:  # a UDP session whose connection closed: adopted by this one
            session.owner = conn
            conn.sessions.add(session)
        return session

    async def _describe(self, request: Request, conn: Connection) -> bytes:
        name, _ = self._stream_name(request.url)
        hub = self.hubs[name]
        if not await hub.wait_ready(READY_TIMEOUT_S) or hub.parameter_sets is None:
            raise BadRequest(503, "stream not ready", fatal=False)
        local_host = conn.writer.get_extra_info("sockname")[0]
        sdp = build_sdp(name, local_host, hub.parameter_sets, hub.fps_estimate).encode()
        base = request.url.split("?", 1)[0].rstrip("/") + "/"
        headers = {"Content-Base": base, "Content-Type": "application/sdp"}
        return format_response(200, request.cseq, headers, sdp)

    async def _setup(self, request: Request, conn: Connection) -> bytes:
        name, track = self._stream_name(request.url)
        if track not in ("", TRACK):
            raise BadRequest(404, "no such track", fatal=False)
        if request.header("session"):
            raise BadRequest(459, "one track per session", fatal=False)
        hub = self.hubs[name]
        if not await hub.wait_ready(READY_TIMEOUT_S):
            raise BadRequest(503, "stream not ready", fatal=False)
        transport = parse_transport(request.header("transport"))
        protocol = transport["protocol"]
        if "multicast" in transport:
            raise BadRequest(461, "multicast not offered", fatal=False)
        udp = protocol in ("RTP/AVP", "RTP/AVP/UDP") and self.config.udp
        if protocol != "RTP/AVP/TCP" and not udp:
            raise BadRequest(461, "unsupported transport", fatal=False)
        if udp:
            if "client_port" not in transport:
                raise BadRequest(461, "client_port missing", fatal=False)
            client_ports = parse_port_pair(transport["client_port"])
        else:
            channels = parse_channel_pair(transport.get("interleaved", "0-1"))
        if conn.closed:
            raise ConnectionResetError("connection evicted")
        self.session_limits.admit_setup(conn)  # synchronous from here to the insert: the caps hold
        session = RtspSession(hub, self.config.viewer_queue, self.config.session_timeout_s, self._forget,
                              conn.host, self._internal_error)
        self.sessions[session.id] = session
        session.owner = conn
        conn.sessions.add(session)
        if udp:
            bind_host = conn.writer.get_extra_info("sockname")[0]
            try:
                opened = await open_udp_transport(bind_host, conn.host, client_ports, session.touch)
            except OSError as error:
                session.end()
                log.warning("rtsp: cannot open UDP ports for a viewer: %s", error)
                raise BadRequest(503, "cannot open UDP ports", fatal=False) from None
            if not session.attach(opened):
                raise BadRequest(453, "session ended during setup", fatal=False)
            server_ports = opened.server_ports
            reply = (
                f"RTP/AVP;unicast;client_port={client_ports[0]}-{client_ports[1]};"
                f"server_port={server_ports[0]}-{server_ports[1]};ssrc={session.rtp.ssrc:08X}"
            )
        else:
            session.attach(TcpTransport(conn.writer, *channels))
            reply = f"RTP/AVP/TCP;unicast;interleaved={channels[0]}-{channels[1]};ssrc={session.rtp.ssrc:08X}"
        headers = {"Transport": reply, "Session": f"{session.id};timeout={int(self.config.session_timeout_s)}"}
        return format_response(200, request.cseq, headers)

    async def _play(self, request: Request, conn: Connection) -> bytes:
        session = self._session(request, conn)
        self.session_limits.admit_play(session)
        track_url = request.url.split("?", 1)[0].rstrip("/")
        if not track_url.endswith(TRACK):
            track_url = f"{track_url}/{TRACK}"
        timestamp = session.hub.last_timestamp or 0.0
        rtp_info = f"url={track_url};seq={session.rtp.sequence};rtptime={session.rtp.rtp_timestamp(timestamp)}"
        session.play()
        headers = {"Session": session.id, "Range": "npt=0.000-", "RTP-Info": rtp_info}
        return format_response(200, request.cseq, headers)

    async def _pause(self, request: Request, conn: Connection) -> bytes:
        self._session(request, conn)
        raise BadRequest(455, "live streams cannot pause", fatal=False)

    async def _teardown(self, request: Request, conn: Connection) -> bytes:
        session = self._session(request, conn)
        session.end()
        return format_response(200, request.cseq, {"Session": session.id})

    async def _keepalive(self, request: Request, conn: Connection) -> bytes:
        if request.header("session"):
            self._session(request, conn)
        return format_response(200, request.cseq)
