"""A recurrent model in the live pipeline: the camera's frames reach the engine as the same objects from window
to window, so its state goes on from frame to frame; /api and /metrics say how often it did."""

from __future__ import annotations

import pytest

from streamer.app import StreamerApp
from tests.streamer.app_harness import DEMO, app_config, get, http_port, running_app, wait_until

CAMERA = "cam"


@pytest.mark.parametrize("shared", [True, False], ids=["shared-service", "own-engine"])
async def test_lite_recurrent_carries_its_state_through_the_live_pipeline(shared: bool) -> None:
    config = app_config([{"name": CAMERA, "source": DEMO, "engine": {"type": "cpu", "model": "lite-recurrent"}}])
    config.server.inference.shared = shared
    async with running_app(StreamerApp(config)) as app:
        port = http_port(app)

        async def restored_enough() -> bool:
            stream = (await get(port, "/api/streams"))[1]["streams"][0]
            return bool(stream["frames_restored"] >= 40)

        await wait_until(restored_enough, 30, "40 restored frames")
        stream = (await get(port, "/api/streams"))[1]["streams"][0]
        state = stream["recurrent_state"]
        # the stream's first window starts from its reference frame; a window after a frame sent unrestored
        # (engine busy on this shared 2-core machine) restarts too; most go on from the previous frame
        assert state["continued"] >= 30 and state["continued"] > 3 * state["restarted"] >= 3, state
        v1 = (await get(port, f"/api/v1/streams/{CAMERA}"))[1]
        assert v1["recurrent_state"]["continued"] >= state["continued"]  # the same counters, read a little later
        status, exposition = await get(port, "/metrics")
        assert status == 200
        assert f'streamer_recurrent_state_windows_total{{camera="{CAMERA}",outcome="continued"}}' in exposition
        assert f'streamer_recurrent_state_windows_total{{camera="{CAMERA}",outcome="restarted"}}' in exposition
