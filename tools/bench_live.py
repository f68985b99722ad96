"""Live benchmark: synthetic camera -> streamer -> viewer, on this machine, with a baseline in the same run.

The camera is ``streamer run demo --engine passthrough`` (a separate process): a 640x360 25 fps H.264 RTSP
stream whose frames carry a wallclock barcode. The streamer under test restores it; an ffmpeg viewer
decodes its output and the barcode gives the camera-to-viewer latency of every frame. A second, identical
viewer watches the camera directly: the difference is the latency the streamer adds. CPU time and RSS of
the streamer process come from /proc. With ``--relay-baseline`` the same camera also feeds an
``ffmpeg ... -c:v libx264 -preset ultrafast -tune zerolatency -f rtsp`` relay into a receiver, measured in
the same run, and the CPU-time ratio is reported.

    python tools/bench_live.py --engine cpu --seconds 30
    python tools/bench_live.py --engine passthrough --relay-baseline --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamer.timecode import read_timecode  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children that were waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(command: list[str], ready: str | None = None, timeout: float = 120) -> subprocess.Popen[str]:
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found = threading.Event()

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if ready and ready in line:
                found.set()

    threading.Thread(target=drain, daemon=True).start()
    if ready and not found.wait(timeout):
        process.kill()
        raise SystemExit(f"{command[:4]} did not become ready")
    return process


def streamer_command(*args: str, rtsp_port: int, http_port: int) -> list[str]:
    return [sys.executable, "-m", "streamer", "run", *args, "--rtsp-port", str(rtsp_port), "--http-port", str(http_port)]


@dataclass
class ViewerLog:
    arrivals: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    sequences: list[int] = field(default_factory=list)


def view(url: str, width: int, height: int, log: ViewerLog, stop: threading.Event) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-fflags", "nobuffer", "-flags", "low_delay",
         "-i", url, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    size = width * height * 3

    def pump() -> None:
        assert process.stdout is not None
        while not stop.is_set():
            data = process.stdout.read(size)
            if len(data) < size:
                return
            now = time.time()
            log.arrivals.append(time.monotonic())
            code = read_timecode(np.frombuffer(data, np.uint8).reshape(height, width, 3))
            if code is not None:
                log.latencies_ms.append(now * 1000 - code[0])
                log.sequences.append(code[1])

    threading.Thread(target=pump, daemon=True).start()
    return process


def metric(http_port: int, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="cpu", choices=["cpu", "passthrough", "auto", "tensorrt"])
    parser.add_argument("--model", help="ONNX model (default: shipped lite)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured duration (after a 5 s warm-up)")
    parser.add_argument("--relay-baseline", action="store_true", help="also run an ffmpeg re-encoding relay")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()

    camera_port, camera_http = free_port(), free_port()
    config = ROOT / ".bench-camera.yaml"
    config.write_text(
        f"cameras:\n  - name: cam\n    source: {{type: demo, width: {args.width}, height: {args.height}, fps: {args.fps}}}\n"
        "    engine: {type: passthrough}\n    encoder: {bitrate_kbps: 2500}\n"
    )
    camera = start(streamer_command("--config", str(config), rtsp_port=camera_port, http_port=camera_http),
                   ready="health and metrics at")
    camera_url = f"rtsp://127.0.0.1:{camera_port}/cam"
    rtsp_port, http_port = free_port(), free_port()
    extra = ["--model", args.model] if args.model else []
    under_test = start(streamer_command(camera_url, "--engine", args.engine, *extra, rtsp_port=rtsp_port,
                                        http_port=http_port), ready="health and metrics at")
    relay = receiver = None
    if args.relay_baseline:
        receiver_url = f"rtsp://127.0.0.1:{free_port()}/relay"
        receiver = subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-rtsp_flags", "listen", "-i", receiver_url,
                                     "-f", "null", "-"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # ffmpeg's listener prints nothing when ready; give it a moment to bind
        relay = subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i", camera_url,
                                  "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-b:v", "2000k",
                                  "-f", "rtsp", "-rtsp_transport", "tcp", receiver_url],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()
    log = ViewerLog()
    viewer = view(f"rtsp://127.0.0.1:{rtsp_port}/restored", args.width, args.height, log, stop)
    direct_log = ViewerLog()  # the same kind of viewer on the camera itself: the latency we did not add
    direct = view(camera_url, args.width, args.height, direct_log, stop)
    try:
        time.sleep(5.0)  # warm-up: connections, engine first runs, ffmpeg's probe burst
        begin = time.monotonic()
        cpu0 = cpu_seconds(under_test.pid)
        relay_cpu0 = cpu_seconds(relay.pid) if relay else 0.0
        restored0 = metric(http_port, "streamer_frames_restored_total")
        out0 = metric(http_port, "streamer_frames_out_total")
        first_index = len(log.latencies_ms)
        direct_first = len(direct_log.latencies_ms)
        rss = []
        while time.monotonic() - begin < args.seconds:
            time.sleep(1.0)
            rss.append(rss_mb(under_test.pid))
        elapsed = time.monotonic() - begin
        cpu = cpu_seconds(under_test.pid) - cpu0
        relay_cpu = cpu_seconds(relay.pid) - relay_cpu0 if relay else 0.0
        restored = metric(http_port, "streamer_frames_restored_total") - restored0
        out = metric(http_port, "streamer_frames_out_total") - out0
        degraded = metric(http_port, 'streamer_frames_degraded_total{camera="restored",reason="engine_busy"}')
        latencies = np.array(log.latencies_ms[first_index:])
        direct_latencies = np.array(direct_log.latencies_ms[direct_first:])
        frames = sum(1 for arrival in log.arrivals if begin <= arrival < begin + elapsed)
        result = {
            "engine": args.engine,
            "size": f"{args.width}x{args.height}",
            "camera_fps": args.fps,
            "seconds": round(elapsed, 1),
            "viewer_fps": round(frames / elapsed, 2),
            "pipeline_out_fps": round(out / elapsed, 2),
            "restored_share": round(restored / out, 3) if out else 0.0,
            "engine_busy_frames_total": degraded,
            "latency_ms_p50": round(float(np.percentile(latencies, 50)), 1) if latencies.size else None,
            "latency_ms_p95": round(float(np.percentile(latencies, 95)), 1) if latencies.size else None,
            "timecodes_read": int(latencies.size),
            "camera_direct_latency_ms_p50": round(float(np.percentile(direct_latencies, 50)), 1)
            if direct_latencies.size else None,
            "cpu_percent": round(100 * cpu / elapsed, 1),
            "rss_mb_max": round(max(rss), 1),
        }
        if relay:
            result["ffmpeg_relay_cpu_percent"] = round(100 * relay_cpu / elapsed, 1)
            result["cpu_ratio_vs_ffmpeg_relay"] = round(cpu / relay_cpu, 2) if relay_cpu else None
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        stop.set()
        processes = (viewer, direct, relay, receiver, under_test, camera)
        for process in processes:
            if process is not None and process.poll() is None:
                process.terminate()
        for process in processes:
            if process is not None:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
        config.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
