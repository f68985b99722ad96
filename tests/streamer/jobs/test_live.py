"""A job beside live restoration: the camera keeps (almost) every frame restored while the job runs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from streamer.app import StreamerApp
from streamer.restorer import RestoreStats
from tests.streamer.app_harness import app_config, http_port, running_app
from tests.streamer.jobs.conftest import client, until

CAMERA = {"name": "cam", "source": {"type": "demo", "width": 320, "height": 176, "fps": 25},
          "engine": {"type": "cpu"}}


def share(before: tuple[int, int], stats: RestoreStats) -> tuple[float, int]:
    out, restored = stats.frames_out - before[0], stats.restored - before[1]
    return (restored / out if out else 0.0), out


async def test_a_job_leaves_the_live_camera_at_95_percent_restored(long_clip: Path) -> None:
    app = StreamerApp(app_config([CAMERA], rtsp={"enabled": False}, jobs={"engine": "cpu"}))
    async with running_app(app, stop_timeout=30):
        restorer = app.pipelines[0].restorer
        assert restorer is not None
        stats = restorer.stats
        async def warmed_up() -> bool:  # the engine's first runs are slow
            return stats.frames_out >= 50

        await until(warmed_up, 30, "50 live frames")
        mark, started = (stats.frames_out, stats.restored), time.monotonic()
        await asyncio.sleep(3)
        alone, alone_frames = share(mark, stats)
        async with client(http_port(app)) as api:
            status, job = await api.upload(long_clip)
            assert status == 201
            await api.wait(job["id"], ("running",))

            async def restoring() -> bool:
                return bool((await api.call("GET", f"/api/v1/jobs/{job['id']}"))[1]["progress"]["frames_done"])

            await until(restoring, 60, "the job's first frames")  # a worker process starting on a loaded box
            mark, started = (stats.frames_out, stats.restored), time.monotonic()
            done = await api.wait(job["id"], timeout=60)
            during, frames = share(mark, stats)
        seconds = time.monotonic() - started
        print(f"camera alone: {alone:.1%} of {alone_frames} frames restored; during the job ({seconds:.1f} s, "
              f"{done['progress']['fps']} job frames/s): {during:.1%} of {frames}")
        assert done["state"] == "done" and done["progress"]["frames_done"] == 150
        assert frames >= 20 * seconds, "the camera's output slowed down"
        assert during >= 0.95, f"the job left the camera at {during:.1%} restored (alone: {alone:.1%})"
