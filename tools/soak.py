"""Soak: several cameras, several viewers each, for a long time; does the streamer stay healthy?

N cheap cameras (the demo clip replayed by GStreamer's RTSP server, no re-encode; see tools/live_peers.py)
feed one streamer process (one stream each); M viewers per stream (alternately ffmpeg over TCP and
gst-launch over UDP) watch it. Every --sample seconds the streamer's RSS, open file descriptors and threads
are read from /proc, and every viewer's frame count. Optionally one camera is killed (SIGKILL) every
--camera-restart-every seconds and brought back after --camera-down seconds, to exercise reconnects; the time
from its return until its stream's viewers get frames again is measured. At the end a JSON summary: growth
of RSS/fds/threads (mean of the first window vs the last, default 5 minutes each), reconnects (from
/metrics), ERROR and Traceback lines in the streamer's log, viewer frame rates (mean, worst sample, stalls),
viewer restarts. Exit status 1 when the streamer died, logged errors, or a viewer stalled for good.

    python tools/soak.py --minutes 30                         # 2 streams x 2 viewers, engine cpu
    python tools/soak.py --minutes 30 --camera-restart-every 120 --engine passthrough
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import live_peers as peers  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="measured duration (after the warm-up)")
    parser.add_argument("--streams", type=int, default=2, help="cameras, one stream each")
    parser.add_argument("--viewers", type=int, default=2, help="viewers per stream (ffmpeg/TCP, gst/UDP, ...)")
    parser.add_argument("--engine", default="cpu", choices=["cpu", "passthrough", "auto", "tensorrt"])
    parser.add_argument("--model", help="a shipped model's name or an ONNX file (default: the streamer's)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--clip", type=Path, help="H.264 clip the cameras loop (default: the demo camera's)")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--window", type=float, default=5.0, help="minutes compared at the start and the end")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before the first sample")
    parser.add_argument("--camera-restart-every", type=float, default=0.0,
                        help="kill and restart camera 0 this often (seconds; 0: never)")
    parser.add_argument("--camera-down", type=float, default=2.0, help="seconds a killed camera stays down")
    parser.add_argument("--log", type=Path, help="also write the streamer's log to this file")
    parser.add_argument("--json", type=Path, help="write the summary to this file")
    args = parser.parse_args(argv)
    if args.streams < 1 or args.viewers < 1 or args.minutes <= 0 or args.sample <= 0:
        parser.error("--streams, --viewers, --minutes and --sample must be positive")
    return args


@dataclass
class LogWatch:
    """Counts ERROR and Traceback lines in the streamer's log (keeps the first few) and copies the log."""

    path: Path | None = None
    errors: int = 0
    tracebacks: int = 0
    first: list[str] = field(default_factory=list)

    def __call__(self, line: str) -> None:
        if self.path is not None:
            with self.path.open("a") as out:
                out.write(line)
        is_error, is_traceback = " ERROR " in line, line.startswith("Traceback")
        self.errors += is_error
        self.tracebacks += is_traceback
        if (is_error or is_traceback) and len(self.first) < 10:
            self.first.append(line.strip()[:300])


@dataclass
class ViewerSlot:
    """One viewer position, restarted if its process exits; frames counted across restarts."""

    viewer: peers.Viewer
    height: int
    restarts: int = 0
    counted: int = 0  # frames of the viewers this slot had before the current one
    fps: list[float] = field(default_factory=list)  # per sample
    sampled_frames: int = 0  # frames and seconds over the samples
    sampled_seconds: float = 0.0
    _last: int = 0

    @property
    def frames(self) -> int:
        return self.counted + self.viewer.frames

    def sample(self, seconds: float) -> None:
        self.fps.append((self.frames - self._last) / seconds)
        self.sampled_frames += self.frames - self._last
        self.sampled_seconds += seconds
        self._last = self.frames
        if not self.viewer.alive():
            self.counted += self.viewer.frames
            self.viewer = peers.Viewer(self.viewer.kind, self.viewer.url, self.viewer.width, self.viewer.transport,
                                 record=False).start(self.height)
            self.restarts += 1


def growth(samples: list[tuple[float, float]], window_s: float) -> dict[str, float]:
    """Mean of the first and of the last ``window_s`` of (time, value) samples, their difference, the max."""
    start, end = samples[0][0], samples[-1][0]
    first = [value for moment, value in samples if moment <= start + window_s]
    last = [value for moment, value in samples if moment >= end - window_s]
    mean_first, mean_last = sum(first) / len(first), sum(last) / len(last)
    return {"first": round(mean_first, 1), "last": round(mean_last, 1), "growth": round(mean_last - mean_first, 1),
            "max": round(max(value for _, value in samples), 1)}


def write_config(folder: Path, cameras: list[peers.ReplayCamera], args: argparse.Namespace) -> Path:
    engine: dict[str, Any] = {"type": args.engine}
    if args.model:
        engine["model"] = args.model
    config = {"cameras": [{"name": f"s{index}", "source": {"type": "rtsp", "url": camera.url}, "engine": engine}
                          for index, camera in enumerate(cameras)]}
    path = folder / "soak.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def restart_camera(camera: peers.ReplayCamera, slots: list[ViewerSlot], down_s: float) -> float | None:
    """Kill the camera, bring it back after ``down_s``; seconds from its return until every viewer of its
    stream got a new frame (None when they did not within 30 s)."""
    camera.process.stop(kill=True)
    time.sleep(down_s)
    camera.start()
    back = time.monotonic()
    counts = [slot.frames for slot in slots]
    deadline = back + 30
    while time.monotonic() < deadline:
        if all(slot.frames > count for slot, count in zip(slots, counts, strict=True)):
            return round(time.monotonic() - back, 2)
        time.sleep(0.05)
    return None


def by_minute(samples: list[tuple[float, float]]) -> list[float]:
    """The mean of the samples in each minute since the first."""
    minutes: dict[int, list[float]] = {}
    for moment, value in samples:
        minutes.setdefault(int((moment - samples[0][0]) // 60), []).append(value)
    return [round(sum(values) / len(values), 1) for _, values in sorted(minutes.items())]


def summary(args: argparse.Namespace, samples: dict[str, list[tuple[float, float]]], slots: list[list[ViewerSlot]],
            metrics: tuple[dict[str, float], dict[str, float]], watch: LogWatch, recoveries: list[float | None],
            alive: bool, elapsed: float) -> dict[str, Any]:
    window = min(args.window * 60, elapsed / 3)

    def delta(name: str, *labels: str) -> float:  # over the measured time
        return peers.total(metrics[1], name, *labels) - peers.total(metrics[0], name, *labels)

    names = [f"s{index}" for index in range(args.streams)]
    result: dict[str, Any] = {
        "minutes": round(elapsed / 60, 2),
        "streams": args.streams,
        "viewers_per_stream": args.viewers,
        "engine": args.engine,
        "size": f"{args.width}x{args.height}",
        "fps": args.fps,
        "samples": len(samples["rss_mb"]),
        "compared_window_minutes": round(window / 60, 2),
        "streamer_alive": alive,
        **{name: growth(series, window) for name, series in samples.items()},
        "rss_mb_by_minute": by_minute(samples["rss_mb"]),  # a leak climbs minute after minute; churn does not
        "errors_logged": watch.errors,
        "tracebacks_logged": watch.tracebacks,
        "first_error_lines": watch.first,
        "camera_restarts": len(recoveries),
        "camera_recovery_s": recoveries,
        "reconnects": {name: delta("streamer_source_reconnects_total", f'camera="{name}"') for name in names},
        "out_fps": {name: round(delta("streamer_frames_out_total", f'camera="{name}"') / elapsed, 2)
                    for name in names},
        "restored_share": {name: round(delta("streamer_frames_restored_total", f'camera="{name}"')
                                       / max(delta("streamer_frames_out_total", f'camera="{name}"'), 1), 3)
                           for name in names},
        "viewer_dropped_units": delta("streamer_viewer_dropped_units_total"),
        "queue_dropped": delta("streamer_queue_dropped_total"),
        "viewers": [],
    }
    for index, stream_slots in enumerate(slots):
        for slot in stream_slots:
            rates = slot.fps or [0.0]
            result["viewers"].append({
                "stream": f"s{index}", "kind": f"{slot.viewer.kind}/{slot.viewer.transport}",
                "mean_fps": round(slot.sampled_frames / max(slot.sampled_seconds, 1e-9), 2),
                "worst_sample_fps": round(min(rates), 2),
                "stalled_samples": sum(1 for rate in rates if rate == 0), "restarts": slot.restarts,
            })
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kbps = peers.camera_kbps(args.width, args.height)
    clip = args.clip or peers.demo_clip(args.width, args.height, args.fps, 20.0, kbps)
    cameras = [peers.ReplayCamera(clip, args.fps) for _ in range(args.streams)]
    rtsp_port, http_port = peers.free_port(), peers.free_port()
    watch = LogWatch(args.log)
    if args.log:
        args.log.write_text("")
    slots: list[list[ViewerSlot]] = []
    with tempfile.TemporaryDirectory(prefix="soak-") as folder:
        config = write_config(Path(folder), cameras, args)
        streamer = peers.LoggedProcess([sys.executable, "-m", "streamer", "run", "--config", str(config),
                                  "--rtsp-port", str(rtsp_port), "--http-port", str(http_port)], on_line=watch)
        try:
            for camera in cameras:
                camera.start()
            streamer.start("health and metrics at", 120)
            for index in range(args.streams):
                url = f"rtsp://127.0.0.1:{rtsp_port}/s{index}"
                slots.append([ViewerSlot(peers.Viewer("ffmpeg" if j % 2 == 0 else "gst", url, args.width,
                                                "tcp" if j % 2 == 0 else "udp", record=False).start(args.height),
                                         args.height) for j in range(args.viewers)])
            every = [slot for stream_slots in slots for slot in stream_slots]
            peers.wait_until(lambda: all(slot.frames > 0 for slot in every), 60, "every viewer's first frame")
            time.sleep(args.warmup)
            samples: dict[str, list[tuple[float, float]]] = {"rss_mb": [], "open_fds": [], "threads": []}
            recoveries: list[float | None] = []
            metrics0 = peers.scrape(http_port)
            begin = last = next_restart = time.monotonic()
            for slot in every:  # count from here
                slot.sample(1.0)
                slot.fps.clear()
                slot.sampled_frames, slot.sampled_seconds = 0, 0.0
            while streamer.alive() and time.monotonic() - begin < args.minutes * 60:
                if args.camera_restart_every and time.monotonic() >= next_restart + args.camera_restart_every:
                    next_restart = time.monotonic()
                    recoveries.append(restart_camera(cameras[0], slots[0], args.camera_down))
                time.sleep(max(0.0, last + args.sample - time.monotonic()))
                now = time.monotonic()
                for slot in every:
                    slot.sample(now - last)
                last = now
                if not streamer.alive():
                    break
                moment = now - begin
                samples["rss_mb"].append((moment, peers.rss_mb(streamer.pid)))
                samples["open_fds"].append((moment, float(peers.open_fds(streamer.pid))))
                samples["threads"].append((moment, float(len(list(Path(f"/proc/{streamer.pid}/task").iterdir())))))
            elapsed = time.monotonic() - begin
            alive = streamer.alive()
            metrics = (metrics0, peers.scrape(http_port) if alive else metrics0)
            if not samples["rss_mb"]:
                raise SystemExit("the streamer died before the first sample: " + " | ".join(streamer.tail))
            result = summary(args, samples, slots, metrics, watch, recoveries, alive, elapsed)
        finally:
            for stream_slots in slots:
                for slot in stream_slots:
                    slot.viewer.stop()
            streamer.stop()
            for camera in cameras:
                camera.process.stop()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    stalled_at_end = any(slot.fps and slot.fps[-1] == 0 for stream_slots in slots for slot in stream_slots)
    return 0 if alive and not watch.errors and not watch.tracebacks and not stalled_at_end else 1


if __name__ == "__main__":
    raise SystemExit(main())
