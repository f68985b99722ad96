"""The Grafana dashboard through a camera outage, from real processes: the cheap GStreamer camera
(bench_live's clip replayed by tools/gst_rtsp_camera.py --h264), ``streamer run`` restoring it on the CPU,
an ffmpeg RTSP viewer of the restored stream and Debian's Prometheus scraping /metrics every second. After
--steady seconds the camera is killed (SIGKILL), after --down seconds it is started again on the same port,
and --after seconds later the dashboard's panels are drawn from Prometheus (tools/dashboard_snapshot.py,
with the two events marked) into --out.

Every second the tool also notes what the peers saw (the viewer's frames, /readyz, a few metrics), and
writes that timeline with a summary per phase to --json: the figures to check the picture against.

    python tools/dashboard_drop.py --out docs/dashboard-drop.png --json runs/dashboard_drop.json
    python tools/dashboard_drop.py --steady 30 --down 10 --after 30 --out /tmp/drop.png     # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.peers.prometheus import PrometheusServer  # noqa: E402
from tools import dashboard_snapshot  # noqa: E402
from tools import live_peers as peers  # noqa: E402

CAMERA = "cam"
WATCHED = ("streamer_source_connected", "streamer_rtsp_viewers", "streamer_source_reconnects_total",
           "streamer_source_frames_total", "streamer_encoded_frames_total", "streamer_frames_restored_total")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steady", type=float, default=120.0, help="seconds before the camera is killed")
    parser.add_argument("--down", type=float, default=30.0, help="seconds the camera stays down")
    parser.add_argument("--after", type=float, default=90.0, help="seconds after the camera is back")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--engine", default="cpu", choices=["cpu", "passthrough"])
    parser.add_argument("--rate-interval", default="5s", help="$__rate_interval of the dashboard's queries "
                        "(Grafana's is 4 scrape intervals at the least)")
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard-drop.png"))
    parser.add_argument("--json", type=Path, help="write the timeline and the summary per phase here")
    return parser.parse_args(argv)


def readyz(http_port: int) -> dict[str, Any]:
    """/readyz's answer: {"http": status, "state": the camera's state, "reason": ...}."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=2) as response:
            status, body = response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        status, body = error.code, json.loads(error.read())
    camera = body.get("cameras", {}).get(CAMERA, {})
    return {"http": status, "state": camera.get("state"), "reason": camera.get("reason")}


def sample(begin: float, http_port: int, viewer: peers.Viewer, phase: str) -> dict[str, Any]:
    """One second of the timeline: what the viewer, /readyz and /metrics say now."""
    metrics = peers.scrape(http_port)
    row: dict[str, Any] = {"t": round(time.time() - begin, 1), "phase": phase,
                           "viewer_frames": viewer.frames, "viewer_alive": viewer.alive(), **readyz(http_port)}
    row.update({name.removeprefix("streamer_"): peers.total(metrics, name) for name in WATCHED})
    bucket = "streamer_end_to_end_latency_seconds_bucket"  # frames handed to viewers over 5 s after capture
    row["end_to_end_over_5s"] = peers.total(metrics, bucket, 'le="+Inf"') - peers.total(metrics, bucket, 'le="5.0"')
    states = [key for key, value in metrics.items() if key.startswith("streamer_camera_state{") and value == 1]
    row["camera_state"] = states[0].split('state="', 1)[1].split('"', 1)[0] if states else None
    return row


def run_phase(phase: str, seconds: float, begin: float, http_port: int, viewer: peers.Viewer,
              timeline: list[dict[str, Any]]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        timeline.append(sample(begin, http_port, viewer, phase))
        time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))


def phase_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rates over a phase (first to last sample) and the states seen, in order."""
    first, last = rows[0], rows[-1]
    span = max(last["t"] - first["t"], 1e-9)

    def changes(key: str) -> list[Any]:
        seen: list[Any] = []
        for row in rows:
            if not seen or seen[-1] != row[key]:
                seen.append(row[key])
        return seen

    return {
        "seconds": round(span, 1),
        "viewer_fps": round((last["viewer_frames"] - first["viewer_frames"]) / span, 2),
        "fps_in": round((last["source_frames_total"] - first["source_frames_total"]) / span, 2),
        "fps_out": round((last["encoded_frames_total"] - first["encoded_frames_total"]) / span, 2),
        "reconnects": last["source_reconnects_total"] - first["source_reconnects_total"],
        "frames_over_5s_end_to_end": last["end_to_end_over_5s"] - first["end_to_end_over_5s"],
        "readyz": changes("http"), "states": changes("camera_state"), "connected": changes("source_connected"),
        "rtsp_viewers": changes("rtsp_viewers"), "viewer_alive": changes("viewer_alive"),
    }


def recovery(timeline: list[dict[str, Any]], back: float) -> dict[str, float | None]:
    """Seconds from the camera's return until the viewer had a new frame, /readyz said 200, the source
    said connected (to the sampling second)."""
    after = [row for row in timeline if row["phase"] == "after"]
    frames0 = after[0]["viewer_frames"] if after else 0

    def first(condition: Any) -> float | None:
        return next((round(row["t"] - back, 1) for row in after if condition(row)), None)

    return {"viewer_frames": first(lambda row: row["viewer_frames"] > frames0),
            "readyz_200": first(lambda row: row["http"] == 200),
            "source_connected": first(lambda row: row["source_connected"] == 1)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    clip = peers.demo_clip(args.width, args.height, args.fps, 20.0, peers.camera_kbps(args.width, args.height))
    camera = peers.ReplayCamera(clip, args.fps)
    rtsp_port, http_port = peers.free_port(), peers.free_port()
    streamer = peers.LoggedProcess([sys.executable, "-m", "streamer", "run", camera.url, "--name", CAMERA,
                                    "--engine", args.engine, "--host", "127.0.0.1", "--rtsp-port", str(rtsp_port),
                                    "--http-port", str(http_port)])
    viewer = peers.Viewer("ffmpeg", f"rtsp://127.0.0.1:{rtsp_port}/{CAMERA}", args.width, record=False)
    timeline: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        prometheus = PrometheusServer(Path(folder), f"127.0.0.1:{http_port}")
        try:
            camera.start()
            streamer.start("health and metrics at", 120)
            prometheus.start()
            viewer.start(args.height)
            peers.wait_until(lambda: viewer.frames > 0, 60, "the viewer's first frame")
            begin = time.time()
            run_phase("steady", args.steady, begin, http_port, viewer, timeline)
            killed = time.time()
            camera.process.stop(kill=True)
            run_phase("down", args.down, begin, http_port, viewer, timeline)
            camera.start()
            back = time.time()
            run_phase("after", args.after, begin, http_port, viewer, timeline)
            minutes = (time.time() - begin + 10) / 60
            args.out.parent.mkdir(parents=True, exist_ok=True)
            dashboard_snapshot.main(["--prometheus", f"http://127.0.0.1:{prometheus.port}", "--minutes",
                                     f"{minutes:.2f}", "--rate-interval", args.rate_interval, "--out", str(args.out),
                                     "--mark", f"camera killed={killed}", "--mark", f"camera back={back}"])
        finally:
            viewer.stop()
            prometheus.stop()
            streamer.stop()
            camera.process.stop()
    result = report(args, timeline, killed - begin, back - begin, streamer.tail)
    print(json.dumps({key: value for key, value in result.items() if key != "timeline"}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def report(args: argparse.Namespace, timeline: list[dict[str, Any]], killed: float, back: float,
           log_tail: list[str]) -> dict[str, Any]:
    phases = {name: [row for row in timeline if row["phase"] == name] for name in ("steady", "down", "after")}
    return {"engine": args.engine, "size": f"{args.width}x{args.height}", "camera_fps": args.fps,
            "killed_at_s": round(killed, 1), "back_at_s": round(back, 1),
            "phases": {name: phase_summary(rows) for name, rows in phases.items() if rows},
            "recovery_s": recovery(timeline, back), "streamer_log_tail": log_tail, "timeline": timeline}


if __name__ == "__main__":
    raise SystemExit(main())
