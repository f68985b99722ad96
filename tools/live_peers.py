"""What the live tools (bench_live, soak) run around the streamer under test, as separate processes: a cheap
camera replaying a pre-rendered demo clip (no rendering, no encoding while measuring), viewers that read
each frame's clip index from its barcode, and readers of /proc and /metrics.

The clip is the demo camera's own output (scene, sensor noise, the camera's H.264) rendered once and cached
under ~/.cache/streamer/clips; its barcode carries the frame's index in the clip instead of a wallclock.
The camera (tools/gst_rtsp_camera.py --h264) says when it sends clip frame 0 and sends frame n of its
endless loop at epoch + n/fps, so a viewer's arrival time gives the absolute camera-to-viewer latency, and
two viewers' arrivals of the same frame give the latency between them.
"""

from __future__ import annotations

import math
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamer.config import DemoSourceConfig  # noqa: E402
from streamer.sources.demo import DemoFrames  # noqa: E402
from streamer.timecode import STRIP_HEIGHT, read_timecode  # noqa: E402

SYSTEM_PYTHON = "/usr/bin/python3"  # GStreamer's RTSP server comes with Debian's python3-gi
CAMERA_SCRIPT = ROOT / "tools" / "gst_rtsp_camera.py"
CLIP_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamer" / "clips"
CLIP_VERSION = 1  # bump when the demo camera's output changes, so cached clips are rendered again
STRIP_ROWS = 2 * STRIP_HEIGHT  # viewers convert only the bottom rows, which hold the barcode
TICKS = os.sysconf("SC_CLK_TCK")


def camera_kbps(width: int, height: int) -> int:
    """A camera-like peak bitrate for a frame size: 1200 kbit/s at 640x360, growing as pixels^0.75."""
    return int(1200 * (width * height / (640 * 360)) ** 0.75)


def demo_clip(width: int, height: int, fps: float, seconds: float, kbps: int, cache: Path = CLIP_CACHE) -> Path:
    """The demo camera's H.264 (Annex B, a keyframe every second) for ``seconds``, rendered once."""
    path = cache / f"demo-v{CLIP_VERSION}-{width}x{height}-{fps:g}fps-{seconds:g}s-{kbps}k.h264"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    frames = DemoFrames(DemoSourceConfig(width=width, height=height, fps=fps, bitrate_kbps=kbps),
                        keyint=max(round(fps), 1))
    partial = path.with_name(f"{path.name}.{os.getpid()}.part")
    with partial.open("wb") as out:
        for index in range(max(round(seconds * fps), 1)):
            out.write(b"".join(frames.next(barcode_ms=index).packets))
    partial.replace(path)
    return path


def free_port() -> int:
    """A TCP+UDP port free on every address, below the kernel's ephemeral range: a port the kernel hands out
    (bind to 0) can be taken by any outgoing connection before the peer binds it, which made a streamer
    fail with "address already in use" in CI; ports outside that range are only ever taken by a bind."""
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(max(low - 12000, 1024), low)
        if _bindable(port):
            return port
    raise OSError(f"no free port found below the ephemeral range (starts at {low})")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    """Whether TCP and UDP ``port`` can both be bound (RTSP servers take both)."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("0.0.0.0", port))  # the strictest: conflicts with any address
            except OSError:
                return False
    return True


def listening(port: int) -> bool:
    """Whether something listens on TCP ``port`` (read from /proc, without connecting to it)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) and of its children that were waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def scrape(http_port: int) -> dict[str, float]:
    """The streamer's /metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def total(metrics: dict[str, float], name: str, *labels: str) -> float:
    """Sum of ``name`` over the series whose labels include every ``labels`` item (e.g. 'camera="x"')."""
    return sum(value for key, value in metrics.items()
               if key.split("{", 1)[0] == name and all(label in key for label in labels))


def level_label(key: str) -> str:
    """The ``level`` label of a series key such as 'name{camera="x",level="full"}'."""
    return key.split('level="')[1].split('"')[0]


def restored_by_level(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Frames restored between two scrapes at each ladder level (``streamer_frames_restored_total{level}``),
    levels that restored none left out."""
    counts: dict[str, float] = {}
    for key, value in after.items():
        if key.startswith("streamer_frames_restored_total{") and 'level="' in key:
            level = level_label(key)
            counts[level] = counts.get(level, 0.0) + value - before.get(key, 0.0)
    return {level: count for level, count in sorted(counts.items()) if count > 0}


def restore_level(metrics: dict[str, float], *labels: str) -> str | None:
    """The degradation ladder's level now (``streamer_restore_level`` = 1) of the series with ``labels``."""
    return next((level_label(key) for key, value in metrics.items()
                 if key.startswith("streamer_restore_level{") and value == 1.0
                 and all(label in key for label in labels)), None)


class LoggedProcess:
    """A child process whose output (stdout and stderr, by line) a thread drains, so it never blocks on
    a full pipe; ``on_line`` sees every line."""

    def __init__(self, command: list[str], on_line: Callable[[str], None] | None = None) -> None:
        self.command = command
        self.on_line = on_line
        self.process: subprocess.Popen[str] | None = None
        self.tail: list[str] = []

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, ready: str | None, timeout: float) -> str:
        """Start and wait for a line containing ``ready``; returns that line (None: no wait, returns "")."""
        found: list[str] = []
        event = threading.Event()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(self.command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)

        def drain(stream: object) -> None:
            for line in stream:  # type: ignore[attr-defined]
                self.tail = [*self.tail[-19:], line.rstrip()]
                if ready is not None and not event.is_set() and ready in line:
                    found.append(line.strip())
                    event.set()
                if self.on_line is not None:
                    self.on_line(line)

        threading.Thread(target=drain, args=(self.process.stdout,), daemon=True).start()
        if ready is None:
            return ""
        deadline = time.monotonic() + timeout
        while not event.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{' '.join(self.command[:4])} did not print {ready!r}: " + " | ".join(self.tail))
        return found[0]

    def stop(self, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def background_transcode() -> LoggedProcess:
    """Contention for the live benchmarks: an ffmpeg x264 720p25 transcode at normal priority, started."""
    load = LoggedProcess(["ffmpeg", "-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i",
                          "testsrc2=size=1280x720:rate=25", "-c:v", "libx264", "-preset", "medium", "-threads", "2",
                          "-f", "null", "-"])
    load.start(None, 0)
    return load


class ReplayCamera:
    """tools/gst_rtsp_camera.py replaying an H.264 clip at rtsp://127.0.0.1:PORT/cam (restartable)."""

    def __init__(self, clip: Path, fps: float, port: int | None = None) -> None:
        self.clip, self.fps = clip, fps
        self.port = port or free_port()
        self.epoch = 0.0
        self.frames = 0
        self.stats = ""  # the camera's latest STATS line: frames pushed, pushed late, largest delay
        self.process = LoggedProcess(
            [SYSTEM_PYTHON, str(CAMERA_SCRIPT), "--port", str(self.port), "--h264", str(clip), "--fps", f"{fps:g}"],
            on_line=self._line,
        )

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def _line(self, line: str) -> None:
        if line.startswith("STATS"):
            self.stats = line.strip()

    def start(self, timeout: float = 60) -> ReplayCamera:
        ready = dict(item.split("=", 1) for item in self.process.start("READY", timeout).split()[1:])
        self.epoch, self.frames = float(ready["epoch"]), int(ready["frames"])
        return self


@dataclass
class Viewer:
    """ffmpeg or gst-launch playing ``url`` (TCP or UDP); counts frames and, with ``record``, keeps each
    frame's arrival (wallclock) and the index in its barcode (None where unreadable)."""

    kind: str
    url: str
    width: int
    transport: str = "tcp"
    record: bool = True
    scale_to: tuple[int, int] | None = None  # a stream larger than the camera's (an upscaling model): scaled back
    frames: int = 0
    sightings: list[tuple[float, int | None]] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def command(self, height: int) -> list[str]:
        scaled = f"scale={self.scale_to[0]}:{self.scale_to[1]}," if self.scale_to else ""
        if self.kind == "ffmpeg":
            return ["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", self.transport, "-fflags", "nobuffer",
                    "-flags", "low_delay", "-i", self.url, "-vf", f"{scaled}crop=iw:{STRIP_ROWS}:0:ih-{STRIP_ROWS}",
                    "-fps_mode", "passthrough",  # raw output is constant-rate by default: gaps become repeats
                    "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        return ["gst-launch-1.0", "-q", "rtspsrc", f"location={self.url}", f"protocols={self.transport}",
                "latency=100", "!", "rtph264depay", "!", "h264parse", "!", "avdec_h264", "!",
                *(["videoscale", "!", f"video/x-raw,width={self.scale_to[0]},height={self.scale_to[1]}", "!"]
                  if self.scale_to else []), "videocrop",
                f"top={height - STRIP_ROWS}", "!", "videoconvert", "!", "video/x-raw,format=RGB", "!",
                "fdsink", "fd=1", "sync=false"]

    def start(self, height: int) -> Viewer:
        self.process = subprocess.Popen(self.command(height), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        threading.Thread(target=self._pump, args=(self.process.stdout,), daemon=True).start()
        return self

    def _pump(self, stream: object) -> None:
        size = self.width * STRIP_ROWS * 3
        while True:
            data = stream.read(size)  # type: ignore[attr-defined]
            if len(data) < size:
                return
            arrival = time.time()
            self.frames += 1
            if self.record:
                code = read_timecode(np.frombuffer(data, np.uint8).reshape(STRIP_ROWS, self.width, 3))
                self.sightings.append((arrival, None if code is None else code[0]))

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()


def place_in_stream(sightings: list[tuple[float, int | None]], epoch: float, fps: float, frames: int,
                    since: float = 0.0) -> dict[int, float]:
    """{n: arrival} for the frames seen after ``since``: n is the frame's place in the camera's endless
    loop (clip frame n % frames, sent at epoch + n/fps), the loop found from the arrival time. A frame
    is assumed to arrive between 1 s before it is due (clock noise) and one loop (frames/fps) after."""
    period = frames / fps
    seen: dict[int, float] = {}
    for arrival, index in sightings:
        if index is None or index >= frames or arrival < since:
            continue
        loops = math.floor((arrival - epoch - index / fps + 1.0) / period)
        seen.setdefault(loops * frames + index, arrival)
    return seen


def latencies_ms(seen: dict[int, float], epoch: float, fps: float) -> np.ndarray:
    """Camera-to-viewer latency of each frame: arrival - when the camera sent it."""
    return np.array([(arrival - epoch - n / fps) * 1000 for n, arrival in sorted(seen.items())])


def added_ms(later: dict[int, float], earlier: dict[int, float]) -> np.ndarray:
    """For each frame both viewers saw: how much later it reached ``later`` than ``earlier``."""
    return np.array([(arrival - earlier[n]) * 1000 for n, arrival in sorted(later.items()) if n in earlier])


def percentiles(values: np.ndarray) -> dict[str, float | None]:
    if not values.size:
        return {"p50": None, "p95": None}
    return {"p50": round(float(np.percentile(values, 50)), 1), "p95": round(float(np.percentile(values, 95)), 1)}
