"""Host candidates: which addresses a WHEP/WHIP answer offers (aiortc gathers for real; only the machine's
list of interface addresses is replaced, to stand for a machine or container with loopback alone)."""

from __future__ import annotations

import aioice.ice
import pytest
from aiortc import RTCPeerConnection

from streamer.webrtc.signalling import restrict_host_addresses, rtc_configuration


async def candidate_hosts(addresses: list[str]) -> list[str]:
    pc = RTCPeerConnection(rtc_configuration([]))
    pc.addTransceiver("video", direction="recvonly")
    restrict_host_addresses(pc, addresses)
    await pc.setLocalDescription(await pc.createOffer())
    lines = [line for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate:")]
    await pc.close()
    return [line.split()[4] for line in lines]


async def test_a_machine_with_only_loopback_offers_127_0_0_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [])
    assert await candidate_hosts([]) == ["127.0.0.1"]


async def test_loopback_is_not_offered_where_the_machine_has_other_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.2"])
    assert await candidate_hosts([]) == ["127.0.0.2"]


async def test_configured_addresses_are_the_only_ones_offered() -> None:
    assert await candidate_hosts(["127.0.0.1"]) == ["127.0.0.1"]
