"""Live benchmark: camera -> streamer -> viewer on this machine, with the camera's own viewer and an optional
ffmpeg relay measured in the same run.

The camera is cheap, so that the machine's cores go to the streamer under test: a clip of the demo camera
(scene, sensor noise, the camera's H.264; rendered once and cached, or any H.264 clip given with --clip) is
replayed, looped, as it is (no decode, no encode) by GStreamer's RTSP server (tools/gst_rtsp_camera.py
--h264); its CPU share is reported. The streamer under test restores it; an ffmpeg viewer decodes its output
and a second, identical viewer watches the camera directly. Each frame's barcode holds its index in the
clip, and the camera says when it sends each frame, so the figures are: the absolute camera-to-viewer
latency of each viewer, and the latency the streamer adds (the same frame at the two viewers, matched by
index across loops). CPU time and RSS of the streamer process come from /proc. With ``--relay-baseline``
the same camera also feeds an ``ffmpeg ... -c:v libx264 -preset ultrafast -tune zerolatency -f rtsp``
relay into a receiver, measured in the same run, and the CPU-time ratio is reported.

    python tools/bench_live.py --engine cpu --seconds 30
    python tools/bench_live.py --engine passthrough --relay-baseline --seconds 30
    python tools/bench_live.py --engine cpu --width 1280 --height 720 --fps 30
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import live_peers as peers  # noqa: E402

SIZES = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="cpu", choices=["cpu", "passthrough", "auto", "tensorrt"])
    parser.add_argument("--model", help="a shipped model's name or an ONNX file (default: the streamer's)")
    parser.add_argument("--size", choices=sorted(SIZES), help="shorthand for --width/--height")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=25, help="camera frame rate (e.g. 25 or 30)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured duration (after the warm-up)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds between the viewers' first frames "
                        "and the measurement")
    parser.add_argument("--relay-baseline", action="store_true", help="also run an ffmpeg re-encoding relay")
    parser.add_argument("--clip", type=Path, help="H.264 clip the camera loops (default: the demo camera, "
                        "rendered once at the size and rate asked); must be --width x --height")
    parser.add_argument("--clip-seconds", type=float, default=20.0, help="length of the rendered demo clip")
    parser.add_argument("--camera-kbps", type=int, help="peak bitrate of the rendered clip (default: by size)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--log", type=Path, help="write the streamer's own log (its ladder's moves, errors) here")
    parser.add_argument("--exposure", action="store_true", help="the streamer brightens dark scenes (its "
                        "--exposure; with a dark --clip, e.g. one darkened by ffmpeg's lutrgb)")
    args = parser.parse_args(argv)
    if args.size:
        args.width, args.height = SIZES[args.size]
    if args.clip_seconds < 5:
        parser.error("--clip-seconds must be at least 5 (loops are told apart by time)")
    return args


def streamer_command(*args: str, rtsp_port: int, http_port: int) -> list[str]:
    return [sys.executable, "-m", "streamer", "run", *args, "--rtsp-port", str(rtsp_port),
            "--http-port", str(http_port)]


def start_relay(camera_url: str) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """An ffmpeg receiver listening for RTSP, and an ffmpeg relay re-encoding the camera into it."""
    port = peers.free_port()
    receiver_url = f"rtsp://127.0.0.1:{port}/relay"
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    receiver = subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-rtsp_flags", "listen", "-i", receiver_url,
                                 "-f", "null", "-"], **quiet)
    peers.wait_until(lambda: peers.listening(port), 10, "the ffmpeg relay receiver to listen")
    relay = subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i", camera_url,
                              "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-b:v", "2000k",
                              "-f", "rtsp", "-rtsp_transport", "tcp", receiver_url], **quiet)
    return relay, receiver


def measure(args: argparse.Namespace, camera: peers.ReplayCamera, streamer: peers.LoggedProcess, http_port: int,
            viewer: peers.Viewer, direct: peers.Viewer, relay: subprocess.Popen[bytes] | None) -> dict[str, Any]:
    peers.wait_until(lambda: viewer.frames > 0 and direct.frames > 0, 60, "both viewers' first frames")
    time.sleep(args.warmup)  # the engine's first runs, ffmpeg's probe burst
    begin_wall, begin = time.time(), time.monotonic()
    cpu0, camera_cpu0 = peers.cpu_seconds(streamer.pid), peers.cpu_seconds(camera.process.pid)
    relay_cpu0 = peers.cpu_seconds(relay.pid) if relay else 0.0
    metrics0 = peers.scrape(http_port)
    frames0, direct0 = viewer.frames, direct.frames
    rss = []
    while time.monotonic() - begin < args.seconds:
        time.sleep(1.0)
        rss.append(peers.rss_mb(streamer.pid))
    elapsed = time.monotonic() - begin
    cpu = peers.cpu_seconds(streamer.pid) - cpu0
    camera_cpu = peers.cpu_seconds(camera.process.pid) - camera_cpu0
    relay_cpu = peers.cpu_seconds(relay.pid) - relay_cpu0 if relay else 0.0
    metrics = peers.scrape(http_port)

    def delta(name: str, *labels: str) -> float:
        return peers.total(metrics, name, *labels) - peers.total(metrics0, name, *labels)

    out = delta("streamer_frames_out_total")
    seen = peers.place_in_stream(viewer.sightings, camera.epoch, args.fps, camera.frames, since=begin_wall)
    direct_seen = peers.place_in_stream(direct.sightings, camera.epoch, args.fps, camera.frames, since=begin_wall)
    added = peers.added_ms(seen, direct_seen)
    absolute = peers.percentiles(peers.latencies_ms(seen, camera.epoch, args.fps))
    direct_absolute = peers.percentiles(peers.latencies_ms(direct_seen, camera.epoch, args.fps))
    result: dict[str, Any] = {
        "engine": args.engine,
        "model": args.model or "default",
        "size": f"{args.width}x{args.height}",
        "camera_fps": args.fps,
        "seconds": round(elapsed, 1),
        "viewer_fps": round((viewer.frames - frames0) / elapsed, 2),
        "camera_direct_viewer_fps": round((direct.frames - direct0) / elapsed, 2),
        "pipeline_out_fps": round(out / elapsed, 2),
        "restored_share": round(delta("streamer_frames_restored_total") / out, 3) if out else 0.0,
        # the share of output frames restored at each ladder level (full = the configured model itself)
        "restored_share_by_level": {
            level: round(count / out, 3) for level, count in peers.restored_by_level(metrics0, metrics).items()
        } if out else {},
        "engine_busy_frames": delta("streamer_frames_degraded_total", 'reason="engine_busy"'),
        # an upscaling model's camera: output frames scaled bicubic to its size instead of by the model
        "upscaled_share": round(delta("streamer_upscaled_frames_total") / out, 3) if out else 0.0,
        "degraded_frames": delta("streamer_frames_degraded_total"),
        "latency_ms_p50": absolute["p50"],
        "latency_ms_p95": absolute["p95"],
        "camera_direct_latency_ms_p50": direct_absolute["p50"],
        "camera_direct_latency_ms_p95": direct_absolute["p95"],
        "added_latency_ms_p50": peers.percentiles(added)["p50"],
        "added_latency_ms_p95": peers.percentiles(added)["p95"],
        "frames_matched": int(added.size),
        "cpu_percent": round(100 * cpu / elapsed, 1),
        "rss_mb_max": round(max(rss), 1),
        "camera_cpu_percent": round(100 * camera_cpu / elapsed, 1),
        "camera": camera.stats,
        "clip": str(camera.clip),
    }
    if relay:
        result["ffmpeg_relay_cpu_percent"] = round(100 * relay_cpu / elapsed, 1)
        result["cpu_ratio_vs_ffmpeg_relay"] = round(cpu / relay_cpu, 2) if relay_cpu else None
    return result


def model_scale(model: str | None) -> int:
    """How many times the camera's size the streamer's output is with ``model`` (its ``streamer.scale``)."""
    if model is None:
        return 1
    from engines import resolve_model
    from engines.onnx_cpu import read_model_info

    return read_model_info(resolve_model(model)).scale


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kbps = args.camera_kbps or peers.camera_kbps(args.width, args.height)
    clip = args.clip or peers.demo_clip(args.width, args.height, args.fps, args.clip_seconds, kbps)
    camera = peers.ReplayCamera(clip, args.fps)
    rtsp_port, http_port = peers.free_port(), peers.free_port()
    extra = (["--model", args.model] if args.model else []) + (["--exposure"] if args.exposure else [])
    command = streamer_command(camera.url, "--engine", args.engine, *extra, rtsp_port=rtsp_port, http_port=http_port)
    moves: deque[str] = deque(maxlen=6)  # the ladder's last moves: its log's "restoration level a -> b" lines
    moved = 0
    log_file = args.log.open("w") if args.log else None

    def on_line(line: str) -> None:  # from the process's drain thread
        nonlocal moved
        if log_file is not None and not log_file.closed:  # lines still draining after the run are not kept
            log_file.write(line)
        if "restoration level " in line:
            moves.append(line.split("restoration level ", 1)[1].strip())
            moved += 1

    streamer = peers.LoggedProcess(command, on_line=on_line)
    relay = receiver = None
    viewers: list[peers.Viewer] = []
    try:
        camera.start()
        streamer.start("health and metrics at", 120)
        if args.relay_baseline:
            relay, receiver = start_relay(camera.url)
        scale = model_scale(args.model)
        viewer = peers.Viewer("ffmpeg", f"rtsp://127.0.0.1:{rtsp_port}/restored", args.width,
                              scale_to=(args.width, args.height) if scale > 1 else None).start(args.height)
        direct = peers.Viewer("ffmpeg", camera.url, args.width).start(args.height)  # the latency we did not add
        viewers = [viewer, direct]
        result = measure(args, camera, streamer, http_port, viewer, direct, relay)
        if scale > 1:
            result["output_size"] = f"{scale * args.width}x{scale * args.height}"
        result["ladder_moves"] = moved  # over the whole run, warm-up included
        result["ladder_last_moves"] = list(moves)
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        for each in viewers:
            each.stop()
        for process in (relay, receiver):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)
        streamer.stop()
        camera.process.stop()
        if log_file is not None:
            log_file.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
