"""Restoration jobs' throughput, alone and beside a live camera, through the real API (/api/v1/jobs).

1. alone: an HTTP server with the jobs service and no camera; a recording of the demo camera (its scene,
   sensor noise and low-bitrate H.264, rendered once and cached like tools/bench_live.py's camera clip;
   --width x --height, --seconds long) is uploaded and restored; frames/s of the job (measured by its
   process from its first frame) and the wall time from the upload to the result.
2. beside a live camera: `streamer run` restoring the cheap GStreamer replay camera (the demo clip, as
   tools/bench_live.py uses; --camera-fps) with the CPU engine; first --baseline seconds with no job (the
   camera's restored share and output fps alone), then the same job; the camera's restored share and
   output fps over the job's running time, from the server's own counters.

    python tools/bench_jobs.py                      # 640x360, 4 s clip, camera 640x360 25 fps
    python tools/bench_jobs.py --threads 2 --json runs/bench_jobs.json
    python tools/bench_jobs.py --skip-alone --no-yield-baseline    # the live guard on vs off, same run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamer.jobs.cli import JobsClient  # noqa: E402
from tools import live_peers as peers  # noqa: E402
from tools.bench_live import streamer_command  # noqa: E402


def run_job(client: JobsClient, clip: Path, on_running: Any = None) -> dict[str, Any]:
    """Upload, wait; ``on_running()`` once the job has restored its first frames. The job's figures."""
    started = time.monotonic()
    job = client.upload(clip)
    running_seen = False
    while job["state"] not in ("done", "failed", "cancelled", "expired"):
        time.sleep(0.2)
        job = client.call("GET", f"/api/v1/jobs/{job['id']}")
        if not running_seen and job["state"] == "running" and job["progress"]["frames_done"] > 0:
            running_seen = True
            if on_running is not None:
                on_running()
    wall = time.monotonic() - started
    if job["state"] != "done":
        raise SystemExit(f"the job ended {job['state']}: {job.get('error')}")
    return {"frames": job["progress"]["frames_done"], "job_fps": job["progress"]["fps"],
            "wall_s": round(wall, 2), "wall_fps": round(job["progress"]["frames_done"] / wall, 2),
            "engine": job["engine"]}


def alone(clip: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The job on an HTTP server with no camera (in a thread of this process; the job in its own process)."""
    from prometheus_client import CollectorRegistry

    from streamer.config import HttpServerConfig, JobsConfig
    from streamer.http.server import HttpServer

    port = peers.free_port()
    loop = asyncio.new_event_loop()
    server = HttpServer(HttpServerConfig(host="127.0.0.1", port=port), [], CollectorRegistry(),
                        jobs=JobsConfig(engine="cpu", threads=args.threads))
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(30)
    try:
        return run_job(JobsClient(f"http://127.0.0.1:{port}", None), clip)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


def beside_camera(clip: Path, args: argparse.Namespace, yield_to_live: bool = True) -> dict[str, Any]:
    kbps = peers.camera_kbps(args.camera_width, args.camera_height)
    camera = peers.ReplayCamera(peers.demo_clip(args.camera_width, args.camera_height, args.camera_fps, 20.0, kbps),
                                args.camera_fps)
    rtsp_port, http_port = peers.free_port(), peers.free_port()
    command = streamer_command(camera.url, "--engine", "cpu", rtsp_port=rtsp_port, http_port=http_port)
    env = {"STREAMER__SERVER__JOBS__ENGINE": "cpu", "STREAMER__SERVER__JOBS__THREADS": str(args.threads),
           "STREAMER__SERVER__JOBS__YIELD_TO_LIVE": str(yield_to_live).lower()}
    streamer = peers.LoggedProcess(["env", *[f"{key}={value}" for key, value in env.items()], *command])
    try:
        camera.start()
        streamer.start("health and metrics at", 120)
        time.sleep(args.warmup)
        base = window(http_port, lambda: time.sleep(args.baseline))
        client = JobsClient(f"http://127.0.0.1:{http_port}", None)
        marks: dict[str, Any] = {}
        job = run_job(client, clip, lambda: marks.update(start=(time.monotonic(), peers.scrape(http_port))))
        end = (time.monotonic(), peers.scrape(http_port))
        during = figures(marks["start"], end)
        during["job_pauses"] = delta_labelled(marks["start"][1], end[1], "streamer_job_pauses_total", "")
        during["job_paused_s"] = round(delta_labelled(marks["start"][1], end[1], "streamer_job_paused_seconds_total",
                                                      ""), 1)
        return {"yield_to_live": yield_to_live, "camera_alone": base, "job": job, "camera_during_job": during}
    finally:
        streamer.stop()
        camera.process.stop()


def window(http_port: int, wait: Any) -> dict[str, Any]:
    start = (time.monotonic(), peers.scrape(http_port))
    wait()
    return figures(start, (time.monotonic(), peers.scrape(http_port)))


def figures(start: tuple[float, dict[str, float]], end: tuple[float, dict[str, float]]) -> dict[str, Any]:
    seconds = end[0] - start[0]

    def delta(name: str) -> float:
        return peers.total(end[1], name) - peers.total(start[1], name)

    out, restored = delta("streamer_frames_out_total"), delta("streamer_frames_restored_total")
    runs = delta("streamer_engine_latency_seconds_count")
    return {"seconds": round(seconds, 2), "frames_out": out, "restored_share": round(restored / out, 4) if out else 0.0,
            "output_fps": round(delta("streamer_encoded_frames_total") / seconds, 2),
            "engine_ms_mean": round(1000 * delta("streamer_engine_latency_seconds_sum") / runs, 1) if runs else None,
            "skipped_engine_busy": delta_labelled(start[1], end[1], "streamer_frames_degraded_total", 'reason="engine_busy"'),
            "process_cpu_percent": round(100 * delta("process_cpu_seconds_total") / seconds, 1)}


def delta_labelled(before: dict[str, float], after: dict[str, float], name: str, label: str) -> float:
    return peers.total(after, name, label) - peers.total(before, name, label)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the job's clip at 25 fps")
    parser.add_argument("--threads", type=int, default=1, help="server.jobs.threads")
    parser.add_argument("--camera-width", type=int, default=640)
    parser.add_argument("--camera-height", type=int, default=360)
    parser.add_argument("--camera-fps", type=int, default=25)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of live restoration before measuring")
    parser.add_argument("--baseline", type=float, default=10.0, help="seconds of the camera alone, measured")
    parser.add_argument("--skip-alone", action="store_true", help="only the run beside the camera")
    parser.add_argument("--no-yield-baseline", action="store_true",
                        help="also run beside the camera with server.jobs.yield_to_live off (same run, for the ratio)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    clip = peers.demo_clip(args.width, args.height, 25, args.seconds, peers.camera_kbps(args.width, args.height))
    result: dict[str, Any] = {"clip": f"{clip.name}: {args.width}x{args.height}, {round(args.seconds * 25)} frames",
                              "threads": args.threads}
    if not args.skip_alone:
        result["alone"] = alone(clip, args)
    result["beside_camera"] = beside_camera(clip, args)
    if args.no_yield_baseline:
        result["beside_camera_no_yield"] = beside_camera(clip, args, yield_to_live=False)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
