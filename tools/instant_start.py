"""Time to first frame of new viewers (ffmpeg, GStreamer over RTSP; aiortc over WHEP), with and without
instant start (an IDR asked of the shared encoder when a viewer joins).

One process serves a stream encoded live by our H.264 encoder (the demo scene, no restoration) over RTSP
and WHEP; viewers join at random points of the GOP, one at a time. Figures depend on the machine and on
what else runs on it: say so when you quote them.

    python tools/instant_start.py --joins 5 --gop 2 --size 640x360
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

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
from tools.whep_client import WhepPlayer  # noqa: E402

FPS = 25


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


async def whep_ttff(url: str, timeout: float) -> tuple[float, float] | None:
    """(POST to first picture, ICE connected to first picture) in seconds."""
    player = WhepPlayer(url)
    try:
        await player.start()
        if not await player.first_frame(timeout) or player.posted_at is None:
            return None
        first = player.frames[0][0]
        return first - player.posted_at, first - (player.connected_at or first)
    finally:
        await player.stop()


async def measure(instant: bool, joins: int, gop: float, width: int, height: int) -> dict[str, list[float]]:
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
    url = f"rtsp://127.0.0.1:{rtsp.port}/live"
    viewers = {
        "ffmpeg": ["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i", url, "-frames:v", "1",
                   "-f", "null", "-"],
        "gstreamer": ["gst-launch-1.0", "rtspsrc", f"location={url}", "protocols=tcp", "latency=0", "!",
                      "rtph264depay", "!", "h264parse", "!", "avdec_h264", "!", "fakesink", "num-buffers=1"],
    }
    results: dict[str, list[float]] = {"ffmpeg": [], "gstreamer": [], "whep_post": [], "whep_connected": []}
    failures = 0
    try:
        await hub.wait_ready(10)
        for _ in range(joins):
            for name, command in viewers.items():
                await asyncio.sleep(random.uniform(0, gop))  # join at a random point of the GOP
                seconds = await process_ttff(command, gop + 10, b"EOS" if name == "gstreamer" else None)
                failures += seconds is None
                if seconds is not None:
                    results[name].append(seconds)
            await asyncio.sleep(random.uniform(0, gop))
            whep = await whep_ttff(f"http://127.0.0.1:{http.port}/whep/live", gop + 10)
            failures += whep is None
            if whep is not None:
                results["whep_post"].append(whep[0])
                results["whep_connected"].append(whep[1])
    finally:
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
    return (f"median {statistics.median(values) * 1000:6.0f} ms, max {max(values) * 1000:6.0f} ms "
            f"(n={len(values)})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--joins", type=int, default=5, help="joins per viewer kind and mode")
    parser.add_argument("--gop", type=float, default=2.0, help="keyframe interval of the encoder (s)")
    parser.add_argument("--size", default="640x360")
    args = parser.parse_args()
    width, height = (int(part) for part in args.size.split("x"))
    print(f"time to first frame, {width}x{height} @ {FPS} fps, GOP {args.gop} s, {args.joins} joins each")
    for instant in (False, True):
        results = await measure(instant, args.joins, args.gop, width, height)
        print("instant start" if instant else "waiting for the GOP (before)")
        for name, values in results.items():
            print(f"  {name:15s} {summary(values)}")


if __name__ == "__main__":
    asyncio.run(main())
