"""Cameras added and removed over the HTTP API of a running streamer: time to the first frame at a viewer,
viewers of a removed camera ended, the other camera's viewer undisturbed, and leaks over many cycles.

A cheap camera (the demo clip replayed by GStreamer's RTSP server, no re-encode; tools/live_peers.py) feeds
camera ``a`` of a ``streamer run`` process, watched by an ffmpeg viewer for the whole run. Each cycle:
``POST /api/v1/streams`` camera ``b`` (the same camera URL, the same engine), an ffmpeg viewer on it
(time from the POST to its first decoded frame), ``--hold`` seconds, ``DELETE`` (time until that viewer's
process has exited: its connection was closed), then the streamer's threads, open fds and RSS from /proc.
The first cycle is a warm-up (what stays loaded after it is not a leak); growth is last cycle vs warm-up, and
the mean RSS of each third of the cycles shows a trend apart from the allocator's cycle-to-cycle churn.

    python tools/bench_streams.py --cycles 20 --engine cpu
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import live_peers as peers  # noqa: E402


def api(port: int, method: str, path: str, body: Any = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def wait(condition: Any, timeout: float) -> float | None:
    """Seconds until ``condition()`` held, or None when it did not within ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            return None
        time.sleep(0.02)
    return time.monotonic() - started


def cycle(args: argparse.Namespace, http_port: int, rtsp_port: int, entry: dict[str, Any], pid: int) -> dict[str, Any]:
    posted = time.monotonic()
    status = api(http_port, "POST", "/api/v1/streams", entry)
    if status != 201:
        raise SystemExit(f"POST answered {status}")
    answered = time.monotonic() - posted
    viewer = peers.Viewer("ffmpeg", f"rtsp://127.0.0.1:{rtsp_port}/b", args.width, record=False).start(args.height)
    first = wait(lambda: viewer.frames > 0, 20)
    time.sleep(args.hold)
    deleted = time.monotonic()
    status = api(http_port, "DELETE", "/api/v1/streams/b")
    if status != 204:
        raise SystemExit(f"DELETE answered {status}")
    delete_s = time.monotonic() - deleted
    ended = wait(lambda: not viewer.alive(), 15)
    viewer.stop()
    time.sleep(1.0)
    return {"post_s": round(answered, 2), "first_frame_s": None if first is None else round(answered + first, 2),
            "delete_s": round(delete_s, 2), "viewer_ended_s": None if ended is None else round(delete_s + ended, 2),
            "threads": threads(pid), "fds": peers.open_fds(pid), "rss_mb": round(peers.rss_mb(pid), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--engine", default="cpu", choices=["cpu", "passthrough", "auto"])
    parser.add_argument("--hold", type=float, default=2.0, help="seconds camera b plays in each cycle")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--json", type=Path, help="write the result here too")
    args = parser.parse_args(argv)
    clip = peers.demo_clip(args.width, args.height, args.fps, 20, peers.camera_kbps(args.width, args.height))
    camera = peers.ReplayCamera(clip, args.fps).start()
    entry = {"source": {"type": "rtsp", "url": camera.url}, "engine": {"type": args.engine}}
    http_port, rtsp_port = peers.free_port(), peers.free_port()
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "streamer.yaml"
        config.write_text(yaml.safe_dump({"cameras": [{"name": "a", **entry}]}))
        streamer = peers.LoggedProcess([sys.executable, "-m", "streamer", "run", "--config", str(config), "--host",
                                        "127.0.0.1", "--http-port", str(http_port), "--rtsp-port", str(rtsp_port)])
        viewer_a: peers.Viewer | None = None
        try:
            streamer.start("health and metrics at", 120)
            viewer_a = peers.Viewer("ffmpeg", f"rtsp://127.0.0.1:{rtsp_port}/a", args.width, record=False)
            viewer_a.start(args.height)
            if wait(lambda: viewer_a is not None and viewer_a.frames > 0, 30) is None:
                raise SystemExit("camera a's viewer got no frame")
            started, frames_before = time.monotonic(), viewer_a.frames
            rows = [cycle(args, http_port, rtsp_port, {"name": "b", **entry}, streamer.pid)
                    for _ in range(args.cycles + 1)]
            elapsed = time.monotonic() - started
            a_share = (viewer_a.frames - frames_before) / (elapsed * args.fps)
        finally:
            if viewer_a is not None:
                viewer_a.stop()
            streamer.stop()
            camera.process.stop()
    print(json.dumps(summary(args, rows, a_share, elapsed), indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary(args, rows, a_share, elapsed), "cycles": rows}, indent=1))
    return 0


def summary(args: argparse.Namespace, rows: list[dict[str, Any]], a_share: float, elapsed: float) -> dict[str, Any]:
    warm, measured = rows[0], rows[1:]
    firsts = sorted(row["first_frame_s"] for row in measured if row["first_frame_s"] is not None)
    ended = [row["viewer_ended_s"] for row in measured]
    return {
        "engine": args.engine, "size": f"{args.width}x{args.height}@{args.fps}", "cycles": len(measured),
        "post_answered_s": {"median": statistics.median(row["post_s"] for row in measured),
                            "max": max(row["post_s"] for row in measured)},
        "first_frame_s": {"median": statistics.median(firsts) if firsts else None, "max": max(firsts, default=None),
                          "missing": len(measured) - len(firsts)},
        "viewer_ended_after_delete_s": {"max": max((value for value in ended if value is not None), default=None),
                                        "not_ended": sum(value is None for value in ended)},
        "camera_a_viewer_frames_share": round(a_share, 3), "seconds": round(elapsed, 1),
        "growth_after_warmup": {key: round(measured[-1][key] - warm[key], 1) for key in ("threads", "fds", "rss_mb")},
        "warmup": {key: warm[key] for key in ("threads", "fds", "rss_mb")},
        "rss_mb_by_cycle": [row["rss_mb"] for row in measured],
        # a leak shows as a trend between thirds; the allocator's churn as noise around a level
        "rss_mb_mean_by_third": [round(statistics.mean(part), 1) for part in thirds([row["rss_mb"] for row in measured])],
    }


def thirds(values: list[float]) -> list[list[float]]:
    size = max(1, len(values) // 3)
    return [part for part in (values[:size], values[size:2 * size], values[2 * size:]) if part]


if __name__ == "__main__":
    sys.exit(main())
