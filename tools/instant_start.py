"""Time to first frame of new viewers (ffmpeg, GStreamer over RTSP; aiortc over WHEP; headless Chromium on
the viewer page), with and without instant start (an IDR asked of the shared encoder when a viewer joins).

One process serves a stream encoded live by our H.264 encoder (the demo scene, no restoration) over RTSP
and WHEP; viewers join at random points of the GOP, one at a time. Figures depend on the machine and on
what else runs on it: say so when you quote them.

    python tools/instant_start.py --joins 5 --gop 2 --size 640x360
    python tools/instant_start.py --joins 12 --gop 2 --viewers browser whep

The ``browser`` viewer (Debian's chromium and chromium-driver, Selenium) needs a network namespace where
only loopback exists; the tool runs itself in one (``unshare``) when it is asked for a browser.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from streamer.config import EncoderConfig, HttpServerConfig, RtspServerConfig, WebRtcServerConfig  # noqa: E402
from streamer.encoder import H264Encoder  # noqa: E402
from streamer.graph.frames import Frame  # noqa: E402
from streamer.http.server import HttpServer  # noqa: E402
from streamer.hub import KeyframeGate, StreamHub  # noqa: E402
from streamer.rtsp.server import RtspServer  # noqa: E402
from streamer.sources.demo import DemoScene  # noqa: E402
from tools.arguments import frame_size  # noqa: E402
from tools.browser import chromium, only_loopback, private_network, wait_js  # noqa: E402
from tools.whep_client import WhepPlayer  # noqa: E402

FPS = 25
# what each kind of viewer reports: seconds to its first picture, from its start (RTSP viewers) or from the
# WHEP POST and from ICE connected (WebRTC viewers)
FIGURES = {"ffmpeg": ("ffmpeg",), "gstreamer": ("gstreamer",), "whep": ("whep_post", "whep_connected"),
           "browser": ("browser_post", "browser_connected")}
Join = Callable[[], Awaitable[dict[str, float] | None]]


async def feed(hub: StreamHub, encoder: H264Encoder, frames: list[np.ndarray],
               originals: list[np.ndarray] | None = None, tap: Callable[[Frame], None] | None = None) -> None:
    """Encode ``frames`` in a loop at FPS in real time (in a worker thread, like EncodeStage) into ``hub``.
    With ``originals`` the frames are restored ones made from those camera frames; ``tap`` sees each frame
    before it is encoded (like EncodeStage's taps)."""
    start = time.monotonic()
    index = 0
    while True:
        at, now = index / FPS, time.time()
        original = Frame(originals[index % len(originals)], at, now, index) if originals else None
        frame = Frame(frames[index % len(frames)], at, now, index, restored=original is not None, original=original)
        if tap is not None:
            tap(frame)
        for unit in await asyncio.to_thread(encoder.encode, frame):
            hub.publish(unit)
        index += 1
        await asyncio.sleep(max(0.0, start + index / FPS - time.monotonic()))


async def process_ttff(command: list[str], timeout: float, marker: bytes | None = None) -> float | None:
    """Seconds from starting ``command`` to its first picture: its clean exit (ffmpeg -frames:v 1), or the
    output line holding ``marker`` (gst-launch's EOS after fakesink num-buffers=1); None on failure."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.DEVNULL)

    async def first_picture() -> float | None:
        if process.stdout is None:
            return None
        while line := await process.stdout.readline():
            if marker is not None and marker in line:
                return time.monotonic() - started
        code = await process.wait()
        return time.monotonic() - started if code == 0 and marker is None else None

    try:
        return await asyncio.wait_for(first_picture(), timeout)
    except asyncio.TimeoutError:
        return None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def process_join(name: str, command: list[str], timeout: float, marker: bytes | None = None) -> dict[str, float] | None:
    seconds = await process_ttff(command, timeout, marker)
    return None if seconds is None else {name: seconds}


async def whep_join(url: str, timeout: float) -> dict[str, float] | None:
    """An aiortc WHEP player: (POST, ICE connected) to its first picture."""
    player = WhepPlayer(url)
    try:
        await player.start()
        if not await player.first_frame(timeout) or player.posted_at is None:
            return None
        first = player.frames[0][0]
        return {"whep_post": first - player.posted_at, "whep_connected": first - (player.connected_at or first)}
    finally:
        await player.stop()


class BrowserViewer:
    """One headless Chromium that opens the viewer page anew for each join; the page's own clock times
    the WHEP POST and ICE connected to the first picture shown (requestVideoFrameCallback)."""

    FIRST_PICTURE = "const s = window.streamerStats; return s && s.firstFrameAt !== null && s.connectedAt !== null && s"

    def __init__(self, page: str) -> None:
        self.page = page
        self.profile = tempfile.TemporaryDirectory()
        self.driver: Any = None

    async def start(self) -> None:
        self.driver = await asyncio.to_thread(chromium, self.profile.name)

    async def stop(self) -> None:
        if self.driver is not None:
            await asyncio.to_thread(self.driver.quit)
        self.profile.cleanup()

    async def join(self, timeout: float) -> dict[str, float] | None:
        return await asyncio.to_thread(self._join, timeout)

    def _join(self, timeout: float) -> dict[str, float] | None:
        self.driver.get(self.page)
        try:
            stats = wait_js(self.driver, self.FIRST_PICTURE, timeout, "the page's first picture")
        except TimeoutError:
            return None
        finally:
            self.driver.get("about:blank")  # the page's session ends (DELETE)
        first = stats["firstFrameAt"]
        return {"browser_post": (first - stats["postedAt"]) / 1000, "browser_connected": (first - stats["connectedAt"]) / 1000}


def viewer_joins(kinds: list[str], rtsp_port: int, http_port: int, timeout: float,
                 browser: BrowserViewer | None) -> dict[str, Join]:
    url = f"rtsp://127.0.0.1:{rtsp_port}/live"
    ffmpeg = ["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i", url, "-frames:v", "1", "-f", "null", "-"]
    gstreamer = ["gst-launch-1.0", "rtspsrc", f"location={url}", "protocols=tcp", "latency=0", "!", "rtph264depay",
                 "!", "h264parse", "!", "avdec_h264", "!", "fakesink", "num-buffers=1"]
    joins: dict[str, Join] = {
        "ffmpeg": partial(process_join, "ffmpeg", ffmpeg, timeout),
        "gstreamer": partial(process_join, "gstreamer", gstreamer, timeout, b"EOS"),
        "whep": partial(whep_join, f"http://127.0.0.1:{http_port}/whep/live", timeout),
    }
    if browser is not None:
        joins["browser"] = partial(browser.join, timeout)
    return {kind: joins[kind] for kind in kinds}


async def measure(instant: bool, joins: int, gop: float, width: int, height: int,
                  kinds: list[str]) -> dict[str, list[float]]:
    hub = StreamHub("live")
    encoder = H264Encoder(EncoderConfig(bitrate_kbps=2000, gop_s=gop), fps_hint=FPS)
    if instant:
        hub.keyframes = KeyframeGate(encoder.request_keyframe, 0.25)
    rtsp = RtspServer(RtspServerConfig(host="127.0.0.1", port=0), {"live": hub})
    http = HttpServer(HttpServerConfig(host="127.0.0.1", port=0), [], CollectorRegistry(),
                      WebRtcServerConfig(ice_host_addresses=["127.0.0.1"]), {"live": hub})
    scene = DemoScene(width, height, 1)
    feeder = asyncio.create_task(feed(hub, encoder, [scene.frame(index * 3, float(FPS)) for index in range(FPS)]))
    await rtsp.start()
    await http.start()
    browser = BrowserViewer(f"http://127.0.0.1:{http.port}/?stream=live&view=restored") if "browser" in kinds else None
    results: dict[str, list[float]] = {figure: [] for kind in kinds for figure in FIGURES[kind]}
    failures = 0
    try:
        if browser is not None:
            await browser.start()
        viewers = viewer_joins(kinds, rtsp.port, http.port, gop + 10, browser)
        await hub.wait_ready(10)
        for _ in range(joins):
            for join in viewers.values():
                await asyncio.sleep(random.uniform(0, gop))  # join at a random point of the GOP
                figures = await join()
                failures += figures is None
                for figure, seconds in (figures or {}).items():
                    results[figure].append(seconds)
    finally:
        if browser is not None:
            await browser.stop()
        feeder.cancel()
        await http.stop()
        await rtsp.stop()
        hub.close()
    if failures:
        print(f"  ({failures} viewer(s) got no picture)")
    return results


def summary(values: list[float]) -> str:
    if not values:
        return "no picture"
    p90 = float(np.percentile(values, 90))
    return (f"median {statistics.median(values) * 1000:6.0f} ms, p90 {p90 * 1000:6.0f} ms, "
            f"max {max(values) * 1000:6.0f} ms (n={len(values)})")


async def run(joins: int, gop: float, width: int, height: int, kinds: list[str]) -> None:
    print(f"time to first frame, {width}x{height} @ {FPS} fps, GOP {gop} s, {joins} joins each")
    for instant in (False, True):
        results = await measure(instant, joins, gop, width, height, kinds)
        print("instant start" if instant else "waiting for the GOP (before)")
        for name, values in results.items():
            print(f"  {name:18s} {summary(values)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--joins", type=int, default=5, help="joins per viewer kind and mode")
    parser.add_argument("--gop", type=float, default=2.0, help="keyframe interval of the encoder (s)")
    parser.add_argument("--size", type=frame_size, default="640x360")
    parser.add_argument("--viewers", nargs="+", choices=list(FIGURES), default=["ffmpeg", "gstreamer", "whep"],
                        help="kinds of viewers to time (browser: headless Chromium on the viewer page)")
    args = parser.parse_args()
    if "browser" in args.viewers and not only_loopback():
        # Chromium's ICE needs a namespace where only loopback exists: run this tool again inside one
        sys.exit(subprocess.run(private_network([sys.executable, *sys.argv]), cwd=ROOT).returncode)
    width, height = args.size
    asyncio.run(run(args.joins, args.gop, width, height, args.viewers))


if __name__ == "__main__":
    main()
