"""Supervised stages and truthful health, with real viewers and cameras.

A stage that dies is restarted while its viewers stay connected; /healthz says the process lives, /readyz
says whether every camera produces output, and why not; a camera that cannot work as configured is a clear
error at start (or, among several, marked failed while the others run).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from streamer.app import StreamerApp
from streamer.config import EncoderConfig
from streamer.encoder import H264Encoder
from streamer.graph.frames import AccessUnit, Frame
from tests.peers.processes import GstCamera, free_port
from tests.streamer.app_harness import DEMO, app_config, get, http_port, rtsp_viewer, running_app, wait_until
from tests.streamer.test_cli import streamer


class EncoderThatDies(H264Encoder):
    """The real encoder, which raises (an unexpected error, not a refused frame) while ``dying`` is set."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__(config)
        self.dying = 0  # failures still to raise; -1 = every frame

    def encode(self, frame: Frame) -> list[AccessUnit]:
        if self.dying:
            self.dying -= 1 if self.dying > 0 else 0
            raise RuntimeError("encoder died")
        return super().encode(frame)


async def test_encoder_that_dies_is_restarted_and_viewers_keep_playing() -> None:
    config = app_config([{"name": "cam", "source": DEMO, "engine": {"type": "passthrough"}, "stall_timeout_s": 1.0}])
    app = StreamerApp(config)
    pipeline = app.pipelines[0]
    encoder = EncoderThatDies(config.cameras[0].encoder)
    pipeline.encoder = pipeline.encode_stage.encoder = encoder
    async with running_app(app), rtsp_viewer(app, "cam") as viewer:
        port = http_port(app)

        async def ready() -> bool:
            return (await get(port, "/readyz"))[0] == 200

        await wait_until(ready, 10, "/readyz 200")
        health = pipeline.stage_health()["encode"]

        # 1. One unexpected failure: restarted at once, the same viewer connection goes on receiving frames.
        before = len(viewer.arrivals)
        encoder.dying = 1
        await wait_until(lambda: _true(health.restarts == 1), 10, "the encode stage to restart")

        async def viewer_got(frames: int) -> bool:
            return len(viewer.arrivals) >= before + frames  # type: ignore[union-attr]

        await wait_until(lambda: viewer_got(75), 15, "3 s of frames after the restart at the same viewer")
        assert viewer.process is not None and viewer.process.poll() is None, "the viewer was disconnected"
        metrics = (await get(port, "/metrics"))[1]
        assert 'streamer_stage_restarts_total{camera="cam",stage="encode"} 1.0' in metrics
        assert 'streamer_camera_ready{camera="cam"} 1.0' in metrics

        # 2. It keeps dying: no output, so /readyz turns 503 and says why; /healthz still 200 (alive).
        encoder.dying = -1

        async def not_ready() -> bool:
            return (await get(port, "/readyz"))[0] == 503

        await wait_until(not_ready, 10, "/readyz 503 while the encoder keeps failing")
        body = (await get(port, "/readyz"))[1]
        reason = body["cameras"]["cam"]["reason"]
        assert body["cameras"]["cam"]["state"] == "stalled" and "encoder died" in reason, reason
        assert (await get(port, "/healthz"))[0] == 200
        streams = (await get(port, "/api/streams"))[1]["streams"]
        assert streams[0]["ready"] is False and streams[0]["stages"]["encode"]["restarts"] >= 2

        # 3. It recovers by itself (the supervisor keeps retrying): ready again, the viewer still there.
        encoder.dying = 0
        await wait_until(ready, 15, "/readyz 200 again after the encoder recovered")
        before = len(viewer.arrivals)
        await wait_until(lambda: viewer_got(25), 10, "frames at the viewer after recovery")
        assert viewer.process.poll() is None


async def _true(value: bool) -> bool:
    return value


async def test_failed_and_unreachable_cameras_are_reported_and_the_others_run(tmp_path: Any) -> None:
    missing = tmp_path / "missing.mkv"
    config = app_config([
        {"name": "good", "source": DEMO, "engine": {"type": "passthrough"}},
        {"name": "missing", "source": {"type": "file", "path": str(missing)}, "engine": {"type": "passthrough"}},
        {"name": "down", "source": {"type": "rtsp", "url": f"rtsp://127.0.0.1:{free_port()}/cam",
                                    "open_timeout_s": 1}, "engine": {"type": "passthrough"}},
    ])
    app = StreamerApp(config)
    async with running_app(app), rtsp_viewer(app, "good"):
        port = http_port(app)

        async def down_has_tried() -> bool:
            body = (await get(port, "/readyz"))[1]
            return "cannot open" in body["cameras"]["down"]["reason"]

        await wait_until(down_has_tried, 15, "the unreachable camera's first failed attempt")
        status, body = await get(port, "/readyz")
        cameras = body["cameras"]
        assert status == 503 and body["status"] == "not ready"
        assert cameras["good"] == {"ready": True, "state": "running", "reason": "ok"}
        assert cameras["missing"]["state"] == "failed"
        assert "cameras.1.source.path" in cameras["missing"]["reason"] and "no such file" in cameras["missing"]["reason"]
        assert cameras["down"]["state"] == "starting" and cameras["down"]["reason"].startswith("never connected")
        streams = {stream["name"]: stream for stream in (await get(port, "/api/streams"))[1]["streams"]}
        assert streams["good"]["ready"] and not streams["missing"]["ready"] and not streams["down"]["ready"]
        assert (await get(port, "/healthz"))[0] == 200


async def test_a_stalled_camera_makes_the_stream_not_ready_until_it_resumes(camera: GstCamera) -> None:
    config = app_config([{"name": "cam", "source": {"type": "rtsp", "url": camera.url}, "engine": {"type": "passthrough"},
                          "stall_timeout_s": 1.5}])
    app = StreamerApp(config)
    assert camera.process is not None
    async with running_app(app):
        try:
            port = http_port(app)

            async def readyz_is(status: int) -> bool:
                return (await get(port, "/readyz"))[0] == status

            await wait_until(lambda: readyz_is(200), 20, "the camera's first frames")
            os.kill(camera.process.pid, signal.SIGSTOP)  # the TCP connection stays open, no packet comes
            stalled_at = time.monotonic()
            await wait_until(lambda: readyz_is(503), 10, "/readyz 503 for the stalled camera")
            assert time.monotonic() - stalled_at < 1.5 + 2.0
            reason = (await get(port, "/readyz"))[1]["cameras"]["cam"]["reason"]
            assert reason.startswith("stalled: no output frame for"), reason
            os.kill(camera.process.pid, signal.SIGCONT)
            await wait_until(lambda: readyz_is(200), 20, "/readyz 200 after the camera resumed")
        finally:
            os.kill(camera.process.pid, signal.SIGCONT)


@pytest.mark.parametrize(
    ("source", "field", "words"),
    [
        ("no-such-clip.mp4", "cameras.0.source.path", "no such file"),
        ("rtsp://camera:99999/stream", "cameras.0.source.url", "port '99999'"),
        ("rtsp://user:s3cr3t@/stream", "cameras.0.source.url", "no host name"),
        ("rtsp://user:s3c/r3t@camera/stream", "cameras.0.source.url", "must be written %2F"),
    ],
)
def test_a_single_camera_that_cannot_work_exits_2_naming_the_field(source: str, field: str, words: str) -> None:
    started = time.monotonic()
    result = streamer("run", source, "--engine", "passthrough", "--rtsp-port", "0", "--http-port", "0")
    assert result.returncode == 2, result.stderr
    assert field in result.stderr and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "s3c" not in result.stderr and "r3t" not in result.stderr
    assert time.monotonic() - started < 20
