"""The degradation ladder live: frames out, share restored (by level) and the restored stream's PSNR, with
the ladder and without it (the previous behaviour: one level, frames skipped when the engine is busy) in
the same run, on the same cheap camera.

The camera is the demo clip (scene, sensor noise, the camera's H.264, a barcode with the frame index)
replayed as it is by GStreamer's RTSP server (tools/live_peers.py). For each mode a `streamer run
--engine cpu` restores it; an ffmpeg viewer decodes the restored stream to full RGB frames; every
--sample-every-th frame (and the one after it, for flicker: the mean absolute error of the frame-to-frame
change against the clean scene's) is compared with the clean render of the frame its barcode names (the barcode
strip excluded), and the camera's own frames of the same indices give the input's PSNR. Frame counts,
restored frames by level, frames sent unrestored by reason and level changes come from /metrics. With
--load, an `ffmpeg` x264 transcode runs at normal priority beside it (contention).

    python tools/bench_ladder.py --width 1280 --height 720 --seconds 60
    python tools/bench_ladder.py --width 640 --height 360 --load --seconds 60
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamer.config import DemoSourceConfig  # noqa: E402
from streamer.sources.demo import DemoScene  # noqa: E402
from streamer.timecode import STRIP_HEIGHT, read_timecode  # noqa: E402
from tools import live_peers as peers  # noqa: E402
from tools.watch_demo import change_error, psnr  # noqa: E402  (psnr: the barcode strip excluded)


def temporal_error(before: np.ndarray, after: np.ndarray, clean_before: np.ndarray, clean_after: np.ndarray) -> float:
    """Flicker (``change_error``) with the barcode strip excluded."""
    rows = slice(0, -STRIP_HEIGHT)
    return change_error(before[rows], after[rows], clean_before[rows], clean_after[rows])


class FullViewer:
    """ffmpeg decoding ``url`` to RGB; counts frames and keeps every ``every``-th with its arrival time."""

    def __init__(self, url: str, width: int, height: int, every: int) -> None:
        self.width, self.height, self.every = width, height, every
        self.frames = 0
        self.samples: list[np.ndarray] = []
        self.process = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i", url, "-fps_mode", "passthrough",
             "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.recording = False
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        size = self.width * self.height * 3
        assert self.process.stdout is not None
        while len(data := self.process.stdout.read(size)) == size:
            self.frames += 1
            if self.recording and self.frames % self.every in (0, 1):  # pairs of consecutive frames (flicker)
                self.samples.append(np.frombuffer(data, np.uint8).reshape(self.height, self.width, 3))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def camera_frames(clip: Path) -> list[np.ndarray]:
    """The camera's own (noisy, compressed) frames, by index."""
    with av.open(str(clip), format="h264") as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def run_mode(args: argparse.Namespace, camera: peers.ReplayCamera, ladder: bool, clean: DemoScene,
             noisy: list[np.ndarray]) -> dict[str, Any]:
    rtsp_port, http_port = peers.free_port(), peers.free_port()
    entry = {"name": "cam", "source": {"type": "rtsp", "url": camera.url},
             "engine": {"type": "cpu", "ladder": {"enabled": ladder}}}
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "streamer.yaml"
        config.write_text(yaml.safe_dump({"cameras": [entry]}))
        streamer = peers.LoggedProcess([sys.executable, "-m", "streamer", "run", "--config", str(config), "--host",
                                        "127.0.0.1", "--rtsp-port", str(rtsp_port), "--http-port", str(http_port)])
        streamer.start("health and metrics at", 120)
        viewer = FullViewer(f"rtsp://127.0.0.1:{rtsp_port}/cam", args.width, args.height, args.sample_every)
        try:
            peers.wait_until(lambda: viewer.frames > 0, 60, "the viewer's first frame")
            time.sleep(args.warmup)
            before, frames0, started = peers.scrape(http_port), viewer.frames, time.monotonic()
            viewer.recording = True
            time.sleep(args.seconds)
            viewer.recording = False
            after, elapsed = peers.scrape(http_port), time.monotonic() - started
            frames = viewer.frames - frames0
        finally:
            viewer.stop()
            streamer.stop()
    return summarise(args, before, after, elapsed, frames, viewer.samples, clean, noisy)


def summarise(args: argparse.Namespace, before: dict[str, float], after: dict[str, float], elapsed: float,
              frames: int, samples: list[np.ndarray], clean: DemoScene, noisy: list[np.ndarray]) -> dict[str, Any]:
    def delta(name: str, *labels: str) -> float:
        return peers.total(after, name, *labels) - peers.total(before, name, *labels)

    out = delta("streamer_frames_out_total")
    levels = sorted({key.split('level="')[1].split('"')[0] for key in after
                     if key.startswith("streamer_frames_restored_total{")})
    gains, restored_db, input_db, flicker_out, flicker_in = [], [], [], [], []
    previous: tuple[int, np.ndarray, np.ndarray] | None = None
    for image in samples:
        code = read_timecode(image)
        if code is None or code[1] >= len(noisy):
            continue
        reference = clean.frame(code[1], args.fps)
        restored_db.append(psnr(image, reference))
        input_db.append(psnr(noisy[code[1]], reference))
        gains.append(restored_db[-1] - input_db[-1])
        if previous is not None and previous[0] == code[1] - 1:  # frame-to-frame change against the clean one's
            flicker_out.append(temporal_error(previous[1], image, previous[2], reference))
            flicker_in.append(temporal_error(noisy[code[1] - 1], noisy[code[1]], previous[2], reference))
        previous = (code[1], image, reference)
    return {
        "seconds": round(elapsed, 1),
        "camera_fps": args.fps,
        "viewer_fps": round(frames / elapsed, 2),
        "frames_out_share_of_camera": round(out / (elapsed * args.fps), 3),
        "restored_share": round(delta("streamer_frames_restored_total") / out, 3) if out else 0.0,
        "restored_share_by_level": {level: round(delta("streamer_frames_restored_total", f'level="{level}"') / out, 3)
                                    for level in levels} if out else {},
        "unrestored_by_reason": {reason: delta("streamer_frames_degraded_total", f'reason="{reason}"')
                                 for reason in ("engine_busy", "engine_slow", "engine_error")},
        "level_changes": {direction: delta("streamer_restore_level_changes_total", f'direction="{direction}"')
                          for direction in ("down", "up")},
        "psnr_samples": len(gains),
        "psnr_input_db": round(float(np.mean(input_db)), 2) if input_db else None,
        "psnr_restored_db": round(float(np.mean(restored_db)), 2) if restored_db else None,
        "psnr_gain_db": round(float(np.mean(gains)), 2) if gains else None,
        "flicker_restored": round(float(np.mean(flicker_out)), 3) if flicker_out else None,
        "flicker_input": round(float(np.mean(flicker_in)), 3) if flicker_in else None,
        "cpu_cores": round(delta("process_cpu_seconds_total") / elapsed, 2),
        "rss_mb": round(max(before.get("process_resident_memory_bytes", 0.0),
                            after.get("process_resident_memory_bytes", 0.0)) / 2**20),
        "level_now": peers.restore_level(after, 'camera="cam"'),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--sample-every", type=int, default=10, help="compare every n-th viewer frame")
    parser.add_argument("--load", action="store_true", help="an ffmpeg x264 transcode at normal priority beside it")
    parser.add_argument("--modes", default="ladder,no-ladder")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    clip = peers.demo_clip(args.width, args.height, args.fps, 20.0, peers.camera_kbps(args.width, args.height))
    noisy = camera_frames(clip)
    clean = DemoScene(args.width, args.height, DemoSourceConfig().seed)
    camera = peers.ReplayCamera(clip, args.fps).start()
    load = peers.background_transcode() if args.load else None
    result: dict[str, Any] = {"size": f"{args.width}x{args.height}@{args.fps}", "load": args.load}
    try:
        for mode in args.modes.split(","):
            result[mode] = run_mode(args, camera, mode == "ladder", clean, noisy)
            print(mode, json.dumps(result[mode]), flush=True)
    finally:
        if load is not None:
            load.stop()
        camera.process.stop()
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
