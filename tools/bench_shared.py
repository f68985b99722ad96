"""How many cameras this machine restores live: the shared inference service against one engine per camera,
in the same run, on the same cheap camera.

One cheap camera (the demo clip replayed as it is by GStreamer's RTSP server, tools/live_peers.py) is pulled
by N streamer cameras (cam0..camN-1, the CPU engine, the degradation ladder on). For each N and mode
(`shared`: server.inference.shared, one engine and one thread budget for the process; `per-camera`: an
engine of each camera's own with all cores, the behaviour before the service) a `streamer run` restores
them for --seconds after --warmup, and /metrics gives per camera: frames out / frames the camera sent, the
share of them restored at any level and at the full level, and the level it ended on. A mode keeps up at
N "at full" when every camera has ≥ 95 % of its frames out and ≥ 95 % restored at the full level, "at any
level" when ≥ 95 % out and ≥ 95 % restored at some level. --load runs an ffmpeg x264 transcode at normal
priority beside it.

    python tools/bench_shared.py --cameras 1,2,3,4 --seconds 45 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import live_peers as peers  # noqa: E402

LIVE_SHARE = 0.95


def run(args: argparse.Namespace, camera: peers.ReplayCamera, count: int, shared: bool) -> dict[str, Any]:
    rtsp_port, http_port = peers.free_port(), peers.free_port()
    names = [f"cam{index}" for index in range(count)]
    config = {
        "server": {"inference": {"shared": shared}},
        "cameras": [{"name": name, "source": {"type": "rtsp", "url": camera.url},
                     "engine": {"type": "cpu", "model": args.model}} for name in names],
    }
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "streamer.yaml"
        path.write_text(yaml.safe_dump(config))
        streamer = peers.LoggedProcess([sys.executable, "-m", "streamer", "run", "--config", str(path), "--host",
                                        "127.0.0.1", "--rtsp-port", str(rtsp_port), "--http-port", str(http_port)])
        streamer.start("health and metrics at", 180)
        try:
            peers.wait_until(lambda: all(peers.total(peers.scrape(http_port), "streamer_frames_out_total",
                                                     f'camera="{name}"') > 0 for name in names), 60, "every camera's first frame")
            time.sleep(args.warmup)
            before, started = peers.scrape(http_port), time.monotonic()
            time.sleep(args.seconds)
            after, elapsed = peers.scrape(http_port), time.monotonic() - started
        finally:
            streamer.stop()

    def delta(name: str, *labels: str) -> float:
        return peers.total(after, name, *labels) - peers.total(before, name, *labels)

    cameras = {}
    for name in names:
        label = f'camera="{name}"'
        out = delta("streamer_frames_out_total", label)
        cameras[name] = {
            "out_share": round(out / (elapsed * args.fps), 3),
            "restored_share": round(delta("streamer_frames_restored_total", label) / out, 3) if out else 0.0,
            "full_share": round(delta("streamer_frames_restored_total", label, 'level="full"') / out, 3) if out else 0.0,
            "level_now": peers.restore_level(after, label),
            "level_changes": {direction: delta("streamer_restore_level_changes_total", label, f'direction="{direction}"')
                              for direction in ("down", "up")},
            "unrestored": {reason: delta("streamer_frames_degraded_total", label, f'reason="{reason}"')
                           for reason in ("engine_busy", "engine_slow", "engine_error")},
        }
    worst = {key: min(camera[key] for camera in cameras.values()) for key in ("out_share", "restored_share", "full_share")}
    return {
        "cameras": cameras,
        "worst": worst,
        "live_at_full": worst["out_share"] >= LIVE_SHARE and worst["full_share"] >= LIVE_SHARE,
        "live_at_any_level": worst["out_share"] >= LIVE_SHARE and worst["restored_share"] >= LIVE_SHARE,
        "cpu_cores": round(delta("process_cpu_seconds_total") / elapsed, 2),
        "rss_mb": round(after.get("process_resident_memory_bytes", 0.0) / 2**20),
        "seconds": round(elapsed, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--cameras", default="1,2,3,4", help="numbers of cameras to try")
    parser.add_argument("--modes", default="shared,per-camera")
    parser.add_argument("--model", default="lite")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--repeat", type=int, default=1, help="rounds (the modes' order alternates)")
    parser.add_argument("--load", action="store_true", help="an ffmpeg x264 transcode at normal priority beside it")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    clip = peers.demo_clip(args.width, args.height, args.fps, 20.0, peers.camera_kbps(args.width, args.height))
    camera = peers.ReplayCamera(clip, args.fps).start()
    load = peers.background_transcode() if args.load else None
    result: dict[str, Any] = {"size": f"{args.width}x{args.height}@{args.fps}", "model": args.model, "load": args.load,
                              "runs": {}}
    modes = args.modes.split(",")
    try:
        for attempt in range(args.repeat):
            for count in (int(item) for item in args.cameras.split(",")):
                for mode in modes if attempt % 2 == 0 else modes[::-1]:  # the order alternates between rounds
                    outcome = run(args, camera, count, mode == "shared")
                    key = f"{mode} x{count}" + (f" #{attempt + 1}" if args.repeat > 1 else "")
                    result["runs"][key] = outcome
                    print(key, json.dumps({name: value for name, value in outcome.items() if name != "cameras"}),
                          json.dumps(outcome["cameras"]), flush=True)
    finally:
        if load is not None:
            load.stop()
        camera.process.stop()
    for mode in modes:  # a number of cameras counts as live when every round of it was
        runs: dict[int, list[dict[str, Any]]] = {}
        for key, value in result["runs"].items():
            if key.startswith(mode + " "):
                runs.setdefault(int(key.split(" ")[1][1:]), []).append(value)
        result[mode] = {
            "most_cameras_live_at_full": max((n for n, rounds in runs.items() if all(r["live_at_full"] for r in rounds)),
                                             default=0),
            "most_cameras_live_at_any_level": max((n for n, rounds in runs.items()
                                                   if all(r["live_at_any_level"] for r in rounds)), default=0),
        }
        print(mode, json.dumps(result[mode]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
