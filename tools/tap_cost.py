"""CPU cost of the ZeroMQ frame taps on a live pipeline: the same cheap camera, the same run, the streamer
process measured for --seconds in each configuration, configurations interleaved (A B C D A B C D ...) so
that the machine's drift hits them alike:

    a  taps off
    b  ``--taps`` (PUB on tcp, raw and restored taps, rgb24), no subscriber
    c  the same with one subscriber receiving everything (a separate process: TapClient, counting
       messages and gaps)
    d  a ``taps:`` section with both points in JPEG (quality 85), one subscriber

The camera is bench_live's: the demo clip replayed as it is by GStreamer's RTSP server
(tools/gst_rtsp_camera.py --h264, 640x360 25 fps by default). The engine is the default CPU one, so frames
are restored as a user would have them (when the cores are busy the engine skips frames, so part of the
taps' cost shows as a lower share restored; --engine passthrough shows their CPU alone); one ffmpeg viewer
plays the restored stream (--no-viewer: none).
Per configuration: streamer CPU (cores = CPU seconds per second), CPU ms per output frame, fps in / out
(and at the viewer), share of frames restored, tap messages/s published and received, drops and gaps, and
the change against (a). A markdown table on stdout, every round's figures in the JSON.

    python tools/tap_cost.py --seconds 60 --rounds 2 --out runs/tap_cost.json
    python tools/tap_cost.py --engine passthrough --seconds 60 --rounds 1 --out runs/tap_cost_passthrough.json
    python tools/tap_cost.py --configs a c --seconds 20 --rounds 1      # a quick look
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import live_peers as peers  # noqa: E402

CONFIGS = {
    "a": "taps off",
    "b": "--taps (rgb24 raw+restored), no subscriber",
    "c": "--taps (rgb24 raw+restored), 1 subscriber",
    "d": "taps jpeg q85 raw+restored, 1 subscriber",
}
JPEG_POINTS = [{"point": point, "format": "jpeg", "quality": 85} for point in ("raw", "restored")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured time per configuration and round")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds after the first output frame, "
                        "before measuring (engine warm-up, subscriber joined)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=sorted(CONFIGS))
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--model", help="a shipped model's name (default: the streamer's)")
    parser.add_argument("--engine", default="cpu", choices=["cpu", "passthrough"],
                        help="passthrough: no restoration, so the taps' own CPU is not hidden by frames the "
                        "engine skips when the cores are busy")
    parser.add_argument("--no-viewer", dest="viewer", action="store_false", help="no RTSP viewer")
    parser.add_argument("--out", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--subscribe", metavar="ENDPOINT", help=argparse.SUPPRESS)  # the subscriber process
    return parser.parse_args(argv)


def subscribe(endpoint: str) -> int:
    """The subscriber of (c) and (d): receives (and decodes) every message, prints its counts each 0.5 s."""
    from streamer.taps.client import TapClient

    received, payload = 0, 0
    last = time.monotonic()
    with TapClient(endpoint, topics=[""]) as client:
        print("SUBSCRIBED", flush=True)
        while True:
            frame = client.receive(timeout_s=0.5)
            if frame is not None:
                received += 1
                payload += frame.payload_bytes
            if time.monotonic() - last >= 0.5:
                last = time.monotonic()
                print(f"COUNT received={received} gaps={client.gaps} bytes={payload}", flush=True)


class Subscriber:
    """``tap_cost.py --subscribe`` as a child process; its latest counts."""

    def __init__(self, endpoint: str) -> None:
        self.counts = {"received": 0, "gaps": 0, "bytes": 0}
        self.process = peers.LoggedProcess([sys.executable, str(Path(__file__).resolve()), "--subscribe", endpoint],
                                           on_line=self._line)

    def _line(self, line: str) -> None:
        if line.startswith("COUNT"):
            self.counts = {key: int(value) for key, value in (item.split("=") for item in line.split()[1:])}

    def start(self) -> Subscriber:
        self.process.start("SUBSCRIBED", 30)
        return self


def write_config(folder: Path, config: str, camera_url: str, taps_port: int) -> Path:
    """The streamer's YAML (as JSON) for a configuration; (b) and (c) get their taps from ``--taps``."""
    camera: dict[str, Any] = {"name": "cam", "source": {"type": "rtsp", "url": camera_url}}
    endpoint = f"tcp://127.0.0.1:{taps_port}"
    if config in "bc":
        camera["taps"] = {"endpoint": endpoint}  # enabled by --taps, with its defaults
    elif config == "d":
        camera["taps"] = {"enabled": True, "endpoint": endpoint, "points": JPEG_POINTS}
    path = folder / f"tap_cost_{config}.yaml"
    path.write_text(json.dumps({"cameras": [camera]}, indent=2))
    return path


def streamer_command(args: argparse.Namespace, config: str, path: Path, rtsp: int, http: int) -> list[str]:
    command = [sys.executable, "-m", "streamer", "run", "--config", str(path), "--host", "127.0.0.1",
               "--rtsp-port", str(rtsp), "--http-port", str(http), "--engine", args.engine]
    if config in "bc":
        command.append("--taps")
    if args.model:
        command += ["--model", args.model]
    return command


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy (not idle or waiting for I/O), from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / peers.TICKS


def measure_window(args: argparse.Namespace, streamer: peers.LoggedProcess, http: int,
                   viewer: peers.Viewer | None, subscriber: Subscriber | None) -> dict[str, Any]:
    """Counters over --seconds: CPU from /proc, frames and tap messages from /metrics, the peers' counts."""
    def snapshot() -> tuple[float, float, dict[str, float], int, dict[str, int], float, float]:
        return (time.monotonic(), peers.cpu_seconds(streamer.pid), peers.scrape(http),
                viewer.frames if viewer else 0, dict(subscriber.counts) if subscriber else {},
                peers.cpu_seconds(subscriber.process.pid) if subscriber else 0.0, machine_busy_seconds())

    t0, cpu0, m0, v0, s0, sub0, busy0 = snapshot()
    time.sleep(args.seconds)
    t1, cpu1, m1, v1, s1, sub1, busy1 = snapshot()
    elapsed = t1 - t0

    def delta(name: str, *labels: str) -> float:
        return peers.total(m1, name, *labels) - peers.total(m0, name, *labels)

    encoded = delta("streamer_encoded_frames_total")
    handed = delta("streamer_frames_out_total")
    cpu = cpu1 - cpu0
    result: dict[str, Any] = {
        "seconds": round(elapsed, 1),
        "cpu_cores": round(cpu / elapsed, 4),
        "cpu_ms_per_frame": round(1000 * cpu / encoded, 2) if encoded else None,
        "fps_in": round(delta("streamer_source_frames_total") / elapsed, 2),
        "fps_out": round(encoded / elapsed, 2),
        "viewer_fps": round((v1 - v0) / elapsed, 2) if viewer else None,
        "restored_share": round(delta("streamer_frames_restored_total") / handed, 4) if handed else None,
        "tap_published_per_s": round(delta("streamer_tap_messages_total") / elapsed, 2),
        "tap_dropped": delta("streamer_tap_dropped_total"),
        "rss_mb": round(peers.rss_mb(streamer.pid), 1),
        "machine_busy_cores": round((busy1 - busy0) / elapsed, 3),  # everything, other work included
    }
    if subscriber:
        result["tap_received_per_s"] = round((s1["received"] - s0["received"]) / elapsed, 2)
        result["tap_gaps"] = s1["gaps"] - s0["gaps"]
        result["tap_received_mb_per_s"] = round((s1["bytes"] - s0["bytes"]) / elapsed / 1e6, 2)
        result["subscriber_cpu_cores"] = round((sub1 - sub0) / elapsed, 4)
    return result


def run_one(args: argparse.Namespace, config: str, camera: peers.ReplayCamera, folder: Path) -> dict[str, Any]:
    """Start the streamer (and subscriber, viewer) for one configuration, warm up, measure, stop."""
    rtsp, http, taps_port = peers.free_port(), peers.free_port(), peers.free_port()
    path = write_config(folder, config, camera.url, taps_port)
    streamer = peers.LoggedProcess(streamer_command(args, config, path, rtsp, http))
    subscriber = Subscriber(f"tcp://127.0.0.1:{taps_port}") if config in "cd" else None
    viewer = peers.Viewer("ffmpeg", f"rtsp://127.0.0.1:{rtsp}/cam", args.width, record=False) if args.viewer else None
    try:
        streamer.start("health and metrics at", 120)
        if subscriber:
            subscriber.start()
        if viewer:
            viewer.start(args.height)
        peers.wait_until(lambda: peers.total(peers.scrape(http), "streamer_encoded_frames_total") > 0, 60,
                         "the streamer's first output frame")
        if viewer:
            peers.wait_until(lambda: viewer.frames > 0, 30, "the viewer's first frame")
        time.sleep(args.warmup)
        result = measure_window(args, streamer, http, viewer, subscriber)
    finally:
        if viewer:
            viewer.stop()
        if subscriber:
            subscriber.process.stop()
        streamer.stop()
    return {"config": config, "what": CONFIGS[config], **result}


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [row[key] for row in rows if row.get(key) is not None]
    return round(statistics.median(values), 4) if values else None


def summarise(runs: list[dict[str, Any]], configs: list[str]) -> dict[str, dict[str, Any]]:
    """Per configuration: the median of every figure over the rounds, the CPU range, and the change of
    CPU against (a) (each round against (a) of the same round, then the median)."""
    keys = [key for key in runs[0] if isinstance(runs[0][key], (int, float)) and key != "round"]
    keys += ["tap_received_per_s", "tap_gaps", "tap_received_mb_per_s", "subscriber_cpu_cores"]
    summary: dict[str, dict[str, Any]] = {}
    for config in configs:
        rows = [run for run in runs if run["config"] == config]
        entry: dict[str, Any] = {"what": CONFIGS[config], "rounds": len(rows)}
        entry.update({key: _median(rows, key) for key in dict.fromkeys(keys)})
        entry["cpu_cores_range"] = [min(r["cpu_cores"] for r in rows), max(r["cpu_cores"] for r in rows)]
        baseline = {run["round"]: run for run in runs if run["config"] == "a"}
        deltas = [(r["cpu_cores"] - baseline[r["round"]]["cpu_cores"], r["cpu_ms_per_frame"]
                   - baseline[r["round"]]["cpu_ms_per_frame"]) for r in rows if r["round"] in baseline]
        if deltas:
            entry["delta_cpu_cores_vs_a"] = round(statistics.median(d[0] for d in deltas), 4)
            entry["delta_cpu_cores_vs_a_range"] = [round(min(d[0] for d in deltas), 4),
                                                   round(max(d[0] for d in deltas), 4)]
            entry["delta_cpu_ms_per_frame_vs_a"] = round(statistics.median(d[1] for d in deltas), 2)
        summary[config] = entry
    return summary


def _cell(value: Any, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def markdown(summary: dict[str, dict[str, Any]], camera_fps: int) -> str:
    lines = ["| config | streamer CPU, cores (range) | CPU ms / frame | fps in / out / viewer (camera "
             f"{camera_fps}) | restored | tap msgs/s published / received | tap drops / gaps | Δ CPU vs (a), "
             "cores (range) | Δ ms / frame | machine busy, cores |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for config, s in summary.items():
        low, high = s["cpu_cores_range"]
        delta_range = s.get("delta_cpu_cores_vs_a_range")
        delta = (f"{_cell(s.get('delta_cpu_cores_vs_a'), 3, True)} ({_cell(delta_range[0], 3, True)} … "
                 f"{_cell(delta_range[1], 3, True)})") if delta_range and config != "a" else "—"
        lines.append(
            f"| ({config}) {s['what']} | {s['cpu_cores']:.3f} ({low:.3f}–{high:.3f}) | {_cell(s['cpu_ms_per_frame'])} "
            f"| {_cell(s['fps_in'])} / {_cell(s['fps_out'])} / {_cell(s['viewer_fps'])} "
            f"| {_cell(100 * s['restored_share'] if s['restored_share'] is not None else None, 1)} % "
            f"| {_cell(s['tap_published_per_s'], 1)} / {_cell(s['tap_received_per_s'], 1)} "
            f"| {_cell(s['tap_dropped'], 0)} / {_cell(s['tap_gaps'], 0)} | {delta} "
            f"| {_cell(s.get('delta_cpu_ms_per_frame_vs_a'), 2, True) if config != 'a' else '—'} "
            f"| {_cell(s.get('machine_busy_cores'))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.subscribe:
        return subscribe(args.subscribe)
    clip = peers.demo_clip(args.width, args.height, args.fps, 20.0, peers.camera_kbps(args.width, args.height))
    camera = peers.ReplayCamera(clip, args.fps)
    runs: list[dict[str, Any]] = []
    camera_cpu0 = 0.0
    try:
        camera.start()
        camera_cpu0, begin = peers.cpu_seconds(camera.process.pid), time.monotonic()
        with tempfile.TemporaryDirectory() as folder:
            for round_ in range(1, args.rounds + 1):
                for config in args.configs:
                    run = {"round": round_, **run_one(args, config, camera, Path(folder))}
                    print(json.dumps(run), flush=True)
                    runs.append(run)
        camera_cpu = (peers.cpu_seconds(camera.process.pid) - camera_cpu0) / (time.monotonic() - begin)
    finally:
        camera.process.stop()
    summary = summarise(runs, args.configs)
    table = markdown(summary, args.fps)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"size": f"{args.width}x{args.height}", "camera_fps": args.fps, "seconds": args.seconds,
                "rounds": args.rounds, "viewer": args.viewer, "engine": args.engine, "model": args.model or "default",
                "camera_cpu_cores": round(camera_cpu, 4), "camera": camera.stats}
        args.out.write_text(json.dumps({**meta, "summary": summary, "runs": runs, "table": table}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
