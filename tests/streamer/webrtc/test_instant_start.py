"""Instant start: a new viewer (WHEP or RTSP) asks the shared encoder for an IDR instead of waiting a GOP."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from streamer.config import RtspServerConfig
from streamer.graph.frames import AccessUnit
from streamer.hub import KeyframeGate, StreamHub
from streamer.rtsp.server import RtspServer
from tests.streamer.webrtc.conftest import whep_server
from tests.streamer.webrtc.test_whep import wait_for
from tools.whep_client import WhepPlayer

LONG_GOP_S = 10.0  # without instant start a viewer joining after the first IDR waits up to this long


async def test_the_gate_asks_at_most_once_per_interval_and_loses_no_request() -> None:
    forced: list[float] = []
    gate = KeyframeGate(lambda: forced.append(time.monotonic()), 0.25)
    for _ in range(10):
        gate.request()
    assert len(forced) == 1  # the first at once
    await wait_for(lambda: len(forced) == 2, 2, "the coalesced requests get their IDR")
    assert forced[1] - forced[0] >= 0.25 - 0.01
    await asyncio.sleep(0.4)
    assert len(forced) == 2 and gate.requests == 10 and gate.forced == 2 and gate.coalesced == 9
    gate.request()  # after a quiet interval: at once again
    assert len(forced) == 3
    gate.request()
    gate.close()  # a scheduled IDR is cancelled with its stream
    await asyncio.sleep(0.35)
    assert len(forced) == 3


async def test_a_new_whep_viewer_gets_a_picture_without_waiting_for_the_gop() -> None:
    async with whep_server(gop_s=LONG_GOP_S) as server:
        await wait_for(lambda: server.hub.units_published >= 25, 10, "the stream runs past its first IDR")
        player = WhepPlayer(server.url("/whep/live"))
        await player.start()
        try:
            assert await player.first_frame(LONG_GOP_S / 2), "the viewer waited for the GOP"
            assert server.encoder.stats.requested_keyframes >= 1
        finally:
            await player.stop()


@pytest.mark.usefixtures("real_peers")
async def test_a_new_rtsp_viewer_gets_a_picture_without_waiting_for_the_gop() -> None:
    async with whep_server(gop_s=LONG_GOP_S) as server:
        rtsp = RtspServer(RtspServerConfig(host="127.0.0.1", port=0), {"live": server.hub})
        await rtsp.start()
        try:
            await wait_for(lambda: server.hub.units_published >= 25, 10, "the stream runs past its first IDR")
            started = time.monotonic()
            try:  # subprocess from a thread, not the test loop's (uvloop's) spawn: see streamer.child_process
                viewer = await asyncio.to_thread(subprocess.run, [
                    "ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i",
                    f"rtsp://127.0.0.1:{rtsp.port}/live", "-frames:v", "3", "-f", "null", "-",
                ], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=LONG_GOP_S * 0.6)
            except subprocess.TimeoutExpired:  # (run killed it)
                raise AssertionError("ffmpeg waited for the GOP") from None
            assert viewer.returncode == 0, viewer.stderr.decode()
            assert time.monotonic() - started < LONG_GOP_S * 0.6
            assert server.encoder.stats.requested_keyframes >= 1
        finally:
            await rtsp.stop()


async def test_a_reader_whose_queue_overflows_asks_for_a_keyframe() -> None:
    hub = StreamHub("live")
    forced: list[float] = []
    hub.keyframes = KeyframeGate(lambda: forced.append(time.monotonic()), 0.0)
    reader = hub.subscribe(2, "slow")
    requests = hub.keyframes.requests  # the subscription's own (instant start)
    units = [AccessUnit([b"\x65" if i == 0 else b"\x41"], i / 25, 0.0, i == 0, 16, 16, i) for i in range(4)]
    for unit in units:
        hub.publish(unit)
    assert reader.dropped == 3  # the queue of 2 overflowed on the fourth unit (not a keyframe)
    assert hub.keyframes.requests == requests + 1, "the slow reader waits for the next natural keyframe"
    for index in range(4, 12):  # still too slow: it overflows again, but asks at most once per interval
        hub.publish(AccessUnit([b"\x41"], index / 25, 0.0, False, 16, 16, index))
    hub.publish(AccessUnit([b"\x65"], 12 / 25, 0.0, True, 16, 16, 12))
    for index in range(13, 16):
        hub.publish(AccessUnit([b"\x41"], index / 25, 0.0, False, 16, 16, index))
    assert reader.dropped > 3
    assert hub.keyframes.requests == requests + 1, "a persistently slow reader must not force an IDR per overflow"
    hub.close()
