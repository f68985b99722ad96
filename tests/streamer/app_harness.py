"""Running a whole StreamerApp in a test: its config on loopback ports, start-up until ready, shutdown, and the
HTTP reads and polling the end-to-end tests share."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

from streamer.app import StreamerApp
from streamer.config import build_config
from tests.conftest import HEIGHT, WIDTH
from tests.peers.processes import FrameCapture, start_viewer

DEMO = {"type": "demo", "width": WIDTH, "height": HEIGHT, "fps": 25}


def app_config(cameras: list[dict[str, Any]], **server: Any) -> Any:
    """A config for ``cameras`` with RTSP and HTTP on free loopback ports; ``server`` adds sections of ``server``
    or fields to these two (``inference={"threads": 1}``, ``http={"auth": ...}``, ``rtsp={"enabled": False}``)."""
    sections: dict[str, Any] = {"rtsp": {"host": "127.0.0.1", "port": 0}, "http": {"host": "127.0.0.1", "port": 0}}
    for name, fields in server.items():
        sections[name] = {**sections.get(name, {}), **fields}
    return build_config({"cameras": cameras, "server": sections}, environ={})


@contextlib.asynccontextmanager
async def running_app(
    app: StreamerApp, ready_timeout: float = 30, stop_timeout: float = 15, stop_must_finish: bool = True
) -> AsyncIterator[StreamerApp]:
    """Run ``app`` until the block ends: wait until it is ready (an app that fails at start-up raises its own error
    here instead of a time-out), then stop it and wait for its run to end (``stop_must_finish=False``: a run
    still winding down after ``stop_timeout`` is left to the loop's teardown)."""
    task = asyncio.create_task(app.run())
    try:
        ready = asyncio.create_task(app.ready.wait())
        done, _ = await asyncio.wait({ready, task}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if task in done:
            task.result()  # raises what stopped the app
            raise AssertionError("the app ended before it was ready")
        if ready not in done:
            raise AssertionError(f"the app was not ready after {ready_timeout} s")
        yield app
    finally:
        app.stop()
        if stop_must_finish:
            await asyncio.wait_for(task, stop_timeout)
        else:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(task, stop_timeout)


def http_port(app: StreamerApp) -> int:
    if app.http is None:
        raise AssertionError("the app has no HTTP server")
    return app.http.port


def http_get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            body = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as error:
        body, status = error.read().decode(), error.code
    return status, json.loads(body) if body.startswith("{") else body


async def get(port: int, path: str) -> tuple[int, Any]:
    return await asyncio.to_thread(http_get, port, path)


async def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def rtsp_viewer(app: StreamerApp, camera: str, first_frame_s: float = 30) -> AsyncIterator[FrameCapture]:
    """An ffmpeg viewer of ``camera``'s restored RTSP stream (TCP) that has decoded its first frame; stopped at
    the end of the block."""
    viewer = start_viewer("ffmpeg", app.rtsp_url(camera), WIDTH, HEIGHT, "tcp")
    try:
        decoded = await asyncio.to_thread(viewer.first_frame.wait, first_frame_s)
        assert decoded, f"the viewer of {camera} decoded no frame in {first_frame_s} s"
        yield viewer
    finally:
        viewer.stop()
