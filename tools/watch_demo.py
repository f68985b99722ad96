"""Watch ``streamer run demo`` for a long time as a viewer would, and check the picture stays right.

Starts the demo (its own process, as a user runs it), then at each sample time grabs one second of the
restored RTSP stream with ffmpeg, reads the barcode of every frame (wallclock and frame index), renders the
clean demo scene for that index and measures the PSNR of the restored frame against it (the barcode strip
left out). A demo camera that decays (flat grey blocks) shows as a collapse of that PSNR. Each sample also
saves a PNG (restored | clean, side by side) and reads /metrics (frames out and restored, bitrate).

    python tools/watch_demo.py --minutes 60 --out runs/demo-hour
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamer.sources.demo import DemoScene  # noqa: E402
from streamer.timecode import STRIP_HEIGHT, read_timecode  # noqa: E402
from tools import live_peers as peers  # noqa: E402

WIDTH, HEIGHT, FPS = 640, 360, 25.0
SEQ_MODULUS = 4096  # the barcode's frame counter has 12 bits


def grab(url: str, seconds: float) -> list[np.ndarray]:
    """``seconds`` of decoded frames from the stream (RGB), as an ffmpeg viewer decodes them."""
    command = ["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i", url, "-t", str(seconds),
               "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    data = subprocess.run(command, capture_output=True, timeout=60).stdout
    size = WIDTH * HEIGHT * 3
    return [np.frombuffer(data[start:start + size], np.uint8).reshape(HEIGHT, WIDTH, 3)
            for start in range(0, len(data) - size + 1, size)]


def frame_index(wallclock_ms: int, seq: int, origin_ms: float) -> int:
    """The demo's frame number: the barcode's 12-bit counter, unwrapped with the wallclock it carries."""
    estimate = (wallclock_ms - origin_ms) * FPS / 1000
    wraps = round((estimate - seq) / SEQ_MODULUS)
    return seq + SEQ_MODULUS * max(wraps, 0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a[:-STRIP_HEIGHT].astype(np.float64) - b[:-STRIP_HEIGHT].astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(float(error), 1e-9)))


def change_error(before: np.ndarray, after: np.ndarray, clean_before: np.ndarray, clean_after: np.ndarray) -> float:
    """Flicker: mean |frame-to-frame change − the clean scene's change| (grey levels): 0 when the output
    moves exactly as the scene does."""
    change = after.astype(np.float32) - before
    expected = clean_after.astype(np.float32) - clean_before
    return float(np.mean(np.abs(change - expected)))


def write_png(path: Path, image: np.ndarray) -> None:
    codec: Any = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = image.shape[1], image.shape[0], "rgb24"
    packets = codec.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24"))
    path.write_bytes(b"".join(bytes(packet) for packet in packets))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="how long to watch")
    parser.add_argument("--samples", type=float, nargs="*", default=[0.5, 1, 2, 5, 10, 15, 20, 30, 40, 50, 60],
                        help="minutes at which to sample (those beyond --minutes are skipped; the end is added)")
    parser.add_argument("--out", type=Path, default=Path("runs/watch-demo"), help="folder for PNGs and the JSON")
    parser.add_argument("extra", nargs="*", help="more `streamer run demo` options (after --)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rtsp_port, http_port = peers.free_port(), peers.free_port()
    errors: list[str] = []
    process = peers.LoggedProcess(
        [sys.executable, "-m", "streamer", "run", "demo", "--rtsp-port", str(rtsp_port), "--http-port",
         str(http_port), *args.extra],
        on_line=lambda line: errors.append(line.rstrip()) if " ERROR " in line or "Traceback" in line else None)
    process.start("health and metrics at", 120)
    url = f"rtsp://127.0.0.1:{rtsp_port}/restored"
    scene = DemoScene(WIDTH, HEIGHT, 0)
    started = time.monotonic()
    origin_ms: float | None = None
    samples: list[dict[str, Any]] = []
    previous: dict[str, float] | None = None
    times = sorted({minute for minute in args.samples if minute < args.minutes} | {args.minutes})
    try:
        for minute in times:
            time.sleep(max(0.0, started + minute * 60 - time.monotonic()))
            if not process.alive():
                raise SystemExit("the streamer exited: " + " | ".join(process.tail))
            frames = grab(url, 1.0)
            values = []
            for image in frames:
                code = read_timecode(image)
                if code is None:
                    continue
                if origin_ms is None:  # the first sample comes before the counter wraps (164 s)
                    origin_ms = code[0] - code[1] * 1000 / FPS
                index = frame_index(code[0], code[1], origin_ms)
                clean = scene.frame(index, FPS)
                values.append(psnr(image, clean))
                if len(values) == 1:
                    write_png(args.out / f"minute-{minute:05.1f}.png", np.concatenate([image, clean], axis=1))
            metrics = peers.scrape(http_port)
            now = {"out": metrics.get('streamer_frames_out_total{camera="restored"}', 0.0),
                   "restored": peers.total(metrics, "streamer_frames_restored_total", 'camera="restored"'),
                   "bytes": metrics.get('streamer_encoded_bytes_total{camera="restored"}', 0.0),
                   "t": time.monotonic()}
            row: dict[str, Any] = {"minute": minute, "frames_grabbed": len(frames), "barcodes_read": len(values),
                                   "rss_mb": round(peers.rss_mb(process.pid), 1),
                                   "psnr_db_min": round(min(values), 2) if values else None,
                                   "psnr_db_mean": round(float(np.mean(values)), 2) if values else None}
            if previous is not None:
                span = now["t"] - previous["t"]
                out = now["out"] - previous["out"]
                row["out_fps"] = round(out / span, 2)
                row["restored_share"] = round((now["restored"] - previous["restored"]) / out, 3) if out else None
                row["kbps"] = round((now["bytes"] - previous["bytes"]) * 8 / span / 1000, 1)
            previous = now
            samples.append(row)
            print(json.dumps(row), flush=True)
    finally:
        process.stop()
    summary = {"minutes": args.minutes, "samples": samples, "error_lines": errors[:20], "errors": len(errors)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
