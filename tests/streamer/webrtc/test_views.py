"""The raw and compare views: encoded only while watched, and the compare picture is raw | restored of the
same frame."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np

from tests.media import add_noise, clean_frames
from tests.streamer.webrtc.conftest import FPS, HEIGHT, WIDTH, whep_server
from tests.streamer.webrtc.test_whep import wait_for
from tools.whep_client import WhepPlayer


def mean_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


async def test_the_compare_view_shows_raw_and_restored_of_the_same_frame_only_while_watched() -> None:
    clean = clean_frames(WIDTH, HEIGHT, FPS)
    noisy = add_noise(clean, 30.0)  # the "camera": the stream shows the clean frames as their restoration
    async with whep_server(originals=noisy) as server:
        compare, raw = server.views.views["compare"], server.views.views["raw"]
        await wait_for(lambda: server.hub.units_published >= 10, 10, "the stream runs")
        assert compare.hub.units_published == raw.hub.units_published == 0  # nobody watches: nothing encoded
        player = WhepPlayer(server.url("/whep/live/compare"))
        await player.start()
        try:
            assert await player.first_frame(10), "no picture from the compare view"
            await wait_for(lambda: len(player.frames) >= 10, 10, "10 compare pictures")
            assert {(width, height) for _, width, height in player.frames} == {(2 * WIDTH, HEIGHT)}
            image = player.last_image.to_ndarray(format="rgb24")
            left, right = image[:, :WIDTH], image[:, WIDTH:]
            # the right half is the restored frame (close to clean), the left the camera's (noisy) one
            best = min(range(FPS), key=lambda index: mean_error(right, clean[index]))
            assert mean_error(right, clean[best]) < 0.5 * mean_error(left, clean[best])
            # and both halves are the same instant: the camera frame the restored one was made from
            assert min(range(FPS), key=lambda index: mean_error(left, clean[index])) == best
            assert raw.hub.units_published == 0
            assert compare.hub.delivered_bytes["webrtc"] > 0 and raw.hub.delivered_bytes["webrtc"] == 0  # /metrics view=
        finally:
            await player.stop()
        await wait_for(lambda: not compare.watched, 5, "the viewer leaves")
        await asyncio.sleep(0.3)
        stopped_at = compare.hub.units_published
        await asyncio.sleep(0.5)
        assert compare.hub.units_published == stopped_at  # encoded only while watched


async def test_the_raw_view_shows_the_camera_frames() -> None:
    clean = clean_frames(WIDTH, HEIGHT, FPS)
    noisy = add_noise(clean, 30.0)
    async with whep_server(originals=noisy) as server:
        player = WhepPlayer(server.url("/whep/live/raw"))
        await player.start()
        try:
            assert await player.first_frame(10), "no picture from the raw view"
            await wait_for(lambda: len(player.frames) >= 5, 10, "5 raw pictures")
            image = player.last_image.to_ndarray(format="rgb24")
            assert image.shape == (HEIGHT, WIDTH, 3)
            best = min(range(FPS), key=lambda index: mean_error(image, clean[index]))
            assert mean_error(image, clean[best]) > 10  # noise σ=30 survives: it is the camera's frame
        finally:
            await player.stop()
        async with aiohttp.ClientSession() as http, http.post(
                server.url("/whep/live/nosuch"), data="v=0", headers={"Content-Type": "application/sdp"}) as reply:
            assert reply.status == 404
