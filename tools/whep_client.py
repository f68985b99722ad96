"""A WHEP player made of aiortc: POSTs an offer like MediaMTX's reader.js (audio and video, recvonly), decodes
what arrives and counts it. Used by the tests (a real WebRTC peer over 127.0.0.1) and tools/instant_start.py.

    python tools/whep_client.py http://127.0.0.1:8080/whep/restored --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamer.config import IceServerConfig  # noqa: E402
from streamer.webrtc.signalling import restrict_host_addresses, rtc_configuration  # noqa: E402


@dataclass
class WhepPlayer:
    """One WebRTC viewer of ``url``; ``frames`` holds (arrival time, width, height) of each decoded picture."""

    url: str
    token: str | None = None
    host_addresses: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    audio: bool = True
    frames: list[tuple[float, int, int]] = field(default_factory=list)
    last_image: Any = None
    location: str | None = None
    connected_at: float | None = None
    posted_at: float | None = None
    status: int | None = None
    _pc: RTCPeerConnection | None = None
    _reader: asyncio.Task[None] | None = None
    _first: asyncio.Event = field(default_factory=asyncio.Event)

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Content-Type": content_type} if content_type else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def start(self, timeout: float = 10.0) -> None:
        """Offer, get the answer (raises on a non-201), and read the video until ``stop``."""
        pc = RTCPeerConnection(rtc_configuration(list[IceServerConfig]()))
        self._pc = pc
        if self.audio:
            pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        restrict_host_addresses(pc, self.host_addresses)

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "video":
                self._reader = asyncio.get_running_loop().create_task(self._read(track))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected" and self.connected_at is None:
                self.connected_at = time.monotonic()

        await pc.setLocalDescription(await pc.createOffer())
        self.posted_at = time.monotonic()
        async with aiohttp.ClientSession() as http, http.post(
            self.url, data=pc.localDescription.sdp, headers=self._headers("application/sdp"),
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            self.status = response.status
            body = await response.text()
            if response.status != 201:
                raise RuntimeError(f"WHEP POST answered {response.status}: {body}")
            self.location = response.headers.get("Location")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

    async def _read(self, track: Any) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.frames.append((time.monotonic(), frame.width, frame.height))
            self.last_image = frame
            self._first.set()

    async def first_frame(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._first.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def rate(self, seconds: float) -> float:
        """Pictures per second over the last ``seconds`` of arrivals."""
        if not self.frames:
            return 0.0
        end = self.frames[-1][0]
        return sum(1 for at, _, _ in self.frames if at > end - seconds) / seconds

    async def stop(self, delete: bool = True) -> None:
        if delete and self.location:
            base = self.url.split("/whep/")[0]
            async with aiohttp.ClientSession() as http, http.delete(base + self.location, headers=self._headers()):
                pass
        if self._reader is not None:
            self._reader.cancel()
        if self._pc is not None:
            await self._pc.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--token")
    parser.add_argument("--host", action="append", help="ICE host address to offer (default 127.0.0.1)")
    args = parser.parse_args()
    player = WhepPlayer(args.url, args.token, args.host or ["127.0.0.1"])
    await player.start()
    if not await player.first_frame(10):
        raise SystemExit("no picture within 10 s")
    first = player.frames[0][0] - (player.connected_at or player.frames[0][0])
    await asyncio.sleep(args.seconds)
    print(f"first picture {first * 1000:.0f} ms after connected; {player.rate(args.seconds):.1f} fps; "
          f"{player.frames[-1][1]}x{player.frames[-1][2]}")
    await player.stop()


if __name__ == "__main__":
    asyncio.run(main())
