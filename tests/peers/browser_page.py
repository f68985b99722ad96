"""A real browser (Debian's headless Chromium, driven by Selenium and the system chromedriver) watching the
viewer page of a streamer that runs in this process. Meant to run inside a private network namespace
(``unshare -n``, loopback only) so that Chromium's and aiortc's ICE candidates are 127.0.0.1 only:

    unshare -n sh -c 'ip link set lo up && python -m tests.peers.browser_page --out r.json --screenshot s.png'

Writes a JSON report: per view, pictures shown over ``--seconds`` (requestVideoFrameCallback), their size,
the codec from getStats, and the stream's own frame count over the same time. ``--together N``: N browsers
(each its own Chromium and profile) and an ffmpeg RTSP viewer on the restored stream at once, the pictures
each one shows over the same ``--seconds`` beside the camera's frames.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from streamer.app import StreamerApp
from streamer.config import build_config
from tests.peers.processes import start_viewer
from tools.browser import chromium, wait_js


def start_streamer(camera: dict[str, Any], wait_picture: bool = True) -> tuple[
        StreamerApp, asyncio.AbstractEventLoop, threading.Thread]:
    config = build_config({
        "cameras": [camera],
        "server": {"rtsp": {"host": "127.0.0.1", "port": 0}, "http": {"host": "127.0.0.1", "port": 0},
                   "webrtc": {"ice_host_addresses": ["127.0.0.1"]}},
    }, environ={})
    app = StreamerApp(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(app.run(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (app.ready.is_set() and (app.pipelines[0].hub.parameter_sets or not wait_picture)):
        if time.monotonic() > deadline:
            raise SystemExit("the streamer did not start within 60 s")
        time.sleep(0.1)
    return app, loop, thread


PICTURES = "return window.streamerStats && window.streamerStats.frames > 3"
SHOWN = "return window.streamerStats.frames"


@contextmanager
def browsers(count: int) -> Iterator[list[Any]]:
    """``count`` headless Chromiums, each with a fresh profile of its own."""
    with ExitStack() as stack:
        drivers = []
        for _ in range(count):
            driver = chromium(stack.enter_context(tempfile.TemporaryDirectory()))
            stack.callback(driver.quit)
            drivers.append(driver)
        yield drivers


def page(port: int, view: str) -> str:
    return f"http://127.0.0.1:{port}/?stream=cam&view={view}"


def watch(driver: Any, app: StreamerApp, port: int, view: str, seconds: float) -> dict[str, Any]:
    driver.get(page(port, view))
    wait_js(driver, PICTURES, 30, f"{view}: pictures")
    hub = app.pipelines[0].hub
    shown, published = driver.execute_script(SHOWN), hub.units_published
    time.sleep(seconds)
    stats = driver.execute_script("return window.streamerStats")
    first = stats["firstFrameAt"]
    timing = {"post_to_first_ms": round(first - stats["postedAt"]) if first and stats["postedAt"] else None,
              "connected_to_first_ms": round(first - stats["connectedAt"]) if first and stats["connectedAt"] else None}
    return {"view": view, **timing, "shown": stats["frames"] - shown, "published": hub.units_published - published,
            "width": stats["width"], "height": stats["height"],
            "codec": wait_js(driver, "return window.streamerStats.codec", 5, f"{view}: codec in getStats")}


def watch_together(drivers: list[Any], app: StreamerApp, port: int, seconds: float) -> dict[str, Any]:
    """Every browser and an ffmpeg RTSP viewer on the restored stream at once: what each shows in ``seconds``."""
    pipeline = app.pipelines[0]
    width, height = pipeline.hub.size or (0, 0)
    rtsp = start_viewer("ffmpeg", app.rtsp_url("cam"), width, height, keep_every=1000)
    try:
        for driver in drivers:
            driver.get(page(port, "restored"))
        for number, driver in enumerate(drivers, 1):
            wait_js(driver, PICTURES, 30, f"browser {number}: pictures")
        if not rtsp.first_frame.wait(30):
            raise TimeoutError("the RTSP viewer's first picture")
        while time.monotonic() < rtsp.arrivals[0] + 1.0:  # past ffmpeg's start-up burst
            time.sleep(0.05)
        camera, shown = pipeline.source.stats.frames, [driver.execute_script(SHOWN) for driver in drivers]
        start, published, viewers = time.monotonic(), pipeline.hub.units_published, len(pipeline.hub.subscriptions)
        time.sleep(seconds)
        end, shown_after = time.monotonic(), [driver.execute_script(SHOWN) for driver in drivers]
        return {"camera": pipeline.source.stats.frames - camera, "published": pipeline.hub.units_published - published,
                "browsers": [after - before for before, after in zip(shown, shown_after, strict=True)],
                "rtsp": rtsp.count_between(start, end), "viewers": viewers, "seconds": end - start,
                "dropped": sum(sub.dropped for sub in pipeline.hub.subscriptions)}
    finally:
        rtsp.stop()


def publish(driver: Any, app: StreamerApp, port: int) -> dict[str, Any]:
    """The browser's fake camera published over WHIP, watched by an ffmpeg RTSP viewer."""
    driver.get(f"http://127.0.0.1:{port}/static/publish.html?camera=phone")
    status = wait_js(driver, "return window.publishState && window.publishState.status", 30, "the WHIP answer")
    hub = app.pipelines[0].hub
    deadline = time.monotonic() + 30
    while hub.units_published < 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    viewer = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i", app.rtsp_url("phone"),
         "-frames:v", "25", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"], capture_output=True, timeout=60)
    width, height = hub.size or (0, 0)
    return {"status": status, "published": hub.units_published, "width": width, "height": height,
            "frames": len(viewer.stdout) // max(1, width * height * 3), "viewer_errors": viewer.stderr.decode()[-500:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--screenshot")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--engine", default="passthrough", help="cpu: a restoring engine (for a screenshot)")
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--whip", action="store_true", help="publish the browser's fake camera over WHIP instead")
    parser.add_argument("--together", type=int, default=0, metavar="N",
                        help="N browsers and an RTSP viewer on the restored stream at once instead")
    args = parser.parse_args()
    width, height = (int(part) for part in args.size.split("x"))
    if args.whip:
        camera: dict[str, Any] = {"name": "phone", "source": {"type": "whip"}, "engine": {"type": "passthrough"}}
    else:
        camera = {"name": "cam", "source": {"type": "demo", "width": width, "height": height, "fps": 25},
                  "engine": {"type": args.engine}}
    app, loop, thread = start_streamer(camera, wait_picture=not args.whip)
    port = app.http.port if app.http else 0
    results: dict[str, Any] = {"views": []}
    with browsers(max(1, args.together)) as drivers:
        if args.whip:
            results["whip"] = publish(drivers[0], app, port)
        elif args.together:
            results["together"] = watch_together(drivers, app, port, args.seconds)
        else:
            for view in ("restored", "split"):
                results["views"].append(watch(drivers[0], app, port, view, args.seconds))
        if args.screenshot:
            drivers[0].save_screenshot(args.screenshot)
    loop.call_soon_threadsafe(app.stop)
    thread.join(15)
    Path(args.out).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
