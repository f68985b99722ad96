"""RTP packetisation of H.264 access units (RFC 6184) and RTCP sender reports, on aiortc's classes."""

from __future__ import annotations

import secrets
import time

from aiortc.codecs.h264 import H264Encoder
from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket, RtpPacket

from streamer.graph.frames import AccessUnit

CLOCK_RATE = 90000
NTP_EPOCH_OFFSET = 2208988800


def ntp_timestamp(wallclock: float) -> int:
    seconds = wallclock + NTP_EPOCH_OFFSET
    return (int(seconds) << 32) | int((seconds % 1) * (1 << 32))


class H264RtpSender:
    """Turns access units into RTP packets (FU-A / STAP-A as aiortc packetises) for one session."""

    def __init__(self, payload_type: int) -> None:
        self.payload_type = payload_type
        self.ssrc = secrets.randbits(32)
        self.sequence = secrets.randbits(16)
        self.timestamp_base = secrets.randbits(32)
        self.packets = 0
        self.octets = 0
        self._last_rtp_timestamp = self.timestamp_base
        self._last_wallclock = time.time()

    def rtp_timestamp(self, timestamp: float) -> int:
        return (self.timestamp_base + round(timestamp * CLOCK_RATE)) & 0xFFFFFFFF

    def packetize(self, unit: AccessUnit) -> list[bytes]:
        payloads = H264Encoder._packetize(unit.nals)
        rtp_timestamp = self.rtp_timestamp(unit.timestamp)
        packets = []
        for index, payload in enumerate(payloads):
            packet = RtpPacket(
                payload_type=self.payload_type,
                marker=int(index == len(payloads) - 1),
                sequence_number=self.sequence,
                timestamp=rtp_timestamp,
                ssrc=self.ssrc,
                payload=payload,
            )
            self.sequence = (self.sequence + 1) & 0xFFFF
            self.packets += 1
            self.octets += len(payload)
            packets.append(packet.serialize())
        self._last_rtp_timestamp = rtp_timestamp
        self._last_wallclock = unit.wallclock
        return packets

    def sender_report(self) -> bytes:
        info = RtcpSenderInfo(
            ntp_timestamp=ntp_timestamp(self._last_wallclock),
            rtp_timestamp=self._last_rtp_timestamp,
            packet_count=self.packets & 0xFFFFFFFF,
            octet_count=self.octets & 0xFFFFFFFF,
        )
        return bytes(RtcpSrPacket(ssrc=self.ssrc, sender_info=info))
