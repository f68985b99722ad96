"""One viewer's RTSP session: its transport and the task that sends it RTP."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamer.hub import StreamHub, Subscription
from streamer.rtsp.rtp import H264RtpSender
from streamer.rtsp.sdp import PAYLOAD_TYPE
from streamer.supervisor import Supervisor

if TYPE_CHECKING:
    from streamer.rtsp.limits import Connection

log = logging.getLogger(__name__)

SENDER_REPORT_INTERVAL_S = 2.0
DRAIN_TIMEOUT_S = 10.0


@dataclass
class TcpTransport:
    writer: asyncio.StreamWriter
    rtp_channel: int
    rtcp_channel: int
    framing = 4  # the "$", channel and length in front of each packet on the RTSP connection

    def send(self, channel: int, packet: bytes) -> None:
        self.writer.write(b"$" + bytes([channel]) + len(packet).to_bytes(2, "big") + packet)

    def send_rtp(self, packet: bytes) -> None:
        self.send(self.rtp_channel, packet)

    def send_rtcp(self, packet: bytes) -> None:
        self.send(self.rtcp_channel, packet)

    async def drain(self) -> None:
        await asyncio.wait_for(self.writer.drain(), DRAIN_TIMEOUT_S)

    def close(self) -> None:
        return None


class _RtcpProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_packet: Callable[[], None]) -> None:
        self.on_packet = on_packet

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_packet()


@dataclass
class UdpTransport:
    rtp: asyncio.DatagramTransport
    rtcp: asyncio.DatagramTransport
    client_host: str
    client_ports: tuple[int, int]
    framing = 0

    @property
    def server_ports(self) -> tuple[int, int]:
        return self.rtp.get_extra_info("sockname")[1], self.rtcp.get_extra_info("sockname")[1]

    def send_rtp(self, packet: bytes) -> None:
        self.rtp.sendto(packet, (self.client_host, self.client_ports[0]))

    def send_rtcp(self, packet: bytes) -> None:
        self.rtcp.sendto(packet, (self.client_host, self.client_ports[1]))

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


async def open_udp_transport(
    bind_host: str, client_host: str, client_ports: tuple[int, int], on_rtcp: Callable[[], None]
) -> UdpTransport:
    loop = asyncio.get_running_loop()
    rtp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(bind_host, 0))
    rtcp, _ = await loop.create_datagram_endpoint(lambda: _RtcpProtocol(on_rtcp), local_addr=(bind_host, 0))
    return UdpTransport(rtp, rtcp, client_host, client_ports)


class RtspSession:
    """Created by SETUP, started by PLAY, ended by TEARDOWN, the connection closing, or a timeout.

    ``address`` is the viewer's, ``on_end`` runs once when it ends, ``on_error`` when its sender fails with
    an unexpected exception (an internal error, counted)."""

    def __init__(
        self,
        hub: StreamHub,
        queue_size: int,
        timeout_s: float,
        on_end: Callable[[RtspSession], None],
        address: str = "",
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.id = secrets.token_hex(8)
        self.hub = hub
        self.address = address
        self.owner: Connection | None = None  # the control connection responsible for it
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self.transport: TcpTransport | UdpTransport | None = None
        self.rtp = H264RtpSender(PAYLOAD_TYPE)
        self.subscription: Subscription | None = None
        self.created = time.monotonic()
        self.last_activity = self.created
        self.units_sent = 0
        self._task: asyncio.Task[None] | None = None
        self._on_end = on_end
        self._on_error = on_error
        self._ended = False

    @property
    def playing(self) -> bool:
        return self._task is not None

    def attach(self, transport: TcpTransport | UdpTransport) -> bool:
        """Give the session its transport; False (and the transport closed) when it ended meanwhile."""
        if self._ended:
            transport.close()
            return False
        self.transport = transport
        return True

    @property
    def dropped(self) -> int:
        return self.subscription.dropped if self.subscription else 0

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def expired(self, now: float) -> bool:
        # A TCP session lives as long as its connection; UDP ones need keepalives (requests or RTCP).
        return isinstance(self.transport, UdpTransport) and now - self.last_activity > self.timeout_s

    def play(self) -> None:
        if self._task is None and not self._ended:
            self.subscription = self.hub.subscribe(self.queue_size, name=f"rtsp-{self.id}")
            self._task = asyncio.create_task(self._send_loop(), name=f"rtsp-send-{self.id}")

    def end(self) -> None:
        """Idempotent: stop sending, release the transport, forget the session."""
        if self._ended:
            return
        self._ended = True
        if self.subscription is not None:
            self.subscription.close()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        if self.transport is not None:
            self.transport.close()
        self._on_end(self)

    async def _send_loop(self) -> None:
        """Send until the viewer goes or the session ends. An unexpected failure (a bug, a unit that cannot
        be packetised) is counted and the sender restarted by a supervisor at the next keyframe: the viewer
        keeps its session and connection."""
        supervisor = Supervisor(self.hub.name, "rtsp-viewer", self._send, lambda: self._ended, self._restart)
        try:
            await supervisor.run()
        except asyncio.CancelledError:
            pass
        finally:
            self.end()

    def _restart(self) -> None:
        self.hub.sender_restarts += 1
        if self._on_error is not None:
            self._on_error()
        if self.subscription is not None:
            self.subscription.resync()

    async def _send(self) -> None:
        transport, subscription = self.transport, self.subscription
        if transport is None or subscription is None:
            return
        last_report = 0.0
        try:
            while True:
                unit = await subscription.get()
                if unit is None:
                    break
                sent = 0
                for packet in self.rtp.packetize(unit):
                    transport.send_rtp(packet)
                    sent += len(packet) + transport.framing
                self.units_sent += 1
                now = time.monotonic()
                if now - last_report >= SENDER_REPORT_INTERVAL_S:
                    report = self.rtp.sender_report()
                    transport.send_rtcp(report)
                    sent += len(report) + transport.framing
                    last_report = now
                self.hub.rtsp_wire_bytes += sent
                await transport.drain()
        except (ConnectionError, asyncio.TimeoutError, OSError) as error:
            log.info("rtsp session %s: viewer gone (%s)", self.id, error.__class__.__name__)
