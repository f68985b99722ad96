"""Throughput of the frame taps: messages/s and MB/s through a real socket, per transport and format.

A producer thread offers 640x360 frames to a tap (PUSH, so nothing is lost to a late join) as fast as its
queue takes them; a client (PULL, streamer.taps.client, which decodes every payload to numpy as a consumer
would) receives for --seconds. One process, so publisher and consumer share the machine's cores.

The i420 case publishes a decoder's frame (an ``av.VideoFrame`` in yuv420p, as the ``raw`` tap gets it), so
it measures the no-conversion path; the client hands it on as planes (no RGB made).

    python tools/tap_bench.py                    # tcp and ipc x rgb24, i420 and jpeg, 3 s each
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamer.config import TapPointConfig, TapsConfig  # noqa: E402
from streamer.graph.frames import Frame  # noqa: E402
from streamer.taps.client import TapClient  # noqa: E402
from streamer.taps.publisher import FrameTap, TapSocket  # noqa: E402
from tests.peers.processes import free_port  # noqa: E402


def scene(width: int, height: int) -> np.ndarray:
    """A smooth picture with mild noise: JPEG sizes close to a camera's."""
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs * 255 / width, ys * 255 / height, (xs + ys) * 127 / (width + height)], axis=2)
    noise = np.random.default_rng(0).normal(0, 4, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def measure(endpoint: str, fmt: str, seconds: float, width: int, height: int) -> tuple[float, float, int]:
    config = TapsConfig(enabled=True, endpoint=endpoint, pattern="push", send_hwm=64)
    socket = TapSocket(config)
    tap = socket.add(FrameTap("bench", TapPointConfig(point="restored", format=fmt, queue=4)))
    image = scene(width, height)
    decoded = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p") if fmt == "i420" else None
    stop = threading.Event()

    def produce() -> None:
        seq = 0
        while not stop.is_set():
            if len(tap._queue) < 2:
                tap.offer(Frame(None if decoded else image, seq / 25, time.time(), seq, video=decoded))
                seq += 1
            else:
                time.sleep(0.0002)

    client = TapClient(endpoint, pattern="pull", receive_hwm=64)
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        while client.receive(5.0) is None:  # connected and flowing
            pass
        count, size = 0, 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            frame = client.receive(1.0)
            if frame is not None:
                count += 1
                size += frame.payload_bytes
        return count / elapsed, size / elapsed / 1e6, size // max(count, 1)
    finally:
        stop.set()
        producer.join()
        client.close()
        socket.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--formats", default="rgb24,i420,jpeg", help="comma-separated tap formats")
    args = parser.parse_args(argv)
    print(f"{'transport':<9} {'format':<6} {'msg/s':>8} {'MB/s':>8} {'bytes/msg':>10}")
    with tempfile.TemporaryDirectory() as folder:
        for transport in ("tcp", "ipc"):
            for fmt in args.formats.split(","):
                endpoint = f"tcp://127.0.0.1:{free_port()}" if transport == "tcp" else f"ipc://{folder}/{fmt}.sock"
                rate, megabytes, per = measure(endpoint, fmt, args.seconds, args.width, args.height)
                print(f"{transport:<9} {fmt:<6} {rate:>8.0f} {megabytes:>8.1f} {per:>10}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
