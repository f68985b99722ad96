"""CPU cost of the two codec stages that stay beside the engine on every node: H.264 decode of the camera
and libx264 encode of the restored stream (the encoder's live settings: ultrafast, zero latency, constrained
baseline, one thread), in CPU milliseconds per frame (process time, so other load on the machine does not
count). The clip is synthetic (a noise picture panning 4 px a frame), which decodes more cheaply than a
noisy real camera: read the decode figure as a lower bound.

    python -m tools.bench_codec --sizes 640x360 1280x720 --frames 250
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction
from typing import Any

import av
import numpy as np

from tools.arguments import frame_size


def codec_cost(width: int, height: int, frames: int, bitrate_kbps: int) -> tuple[float, float]:
    """(encode, decode) CPU ms per frame at ``width`` x ``height``, RGB conversions included."""
    picture = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    encoder: Any = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = Fraction(1, 25)
    encoder.bit_rate = bitrate_kbps * 1000
    encoder.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "threads": "1"}
    packets = []
    spent = 0.0
    for index in range(frames):
        rgb = np.roll(picture, 4 * index, axis=1)  # making the picture is not the encoder's cost
        started = time.process_time()
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        packets += encoder.encode(frame)
        spent += time.process_time() - started
    started = time.process_time()
    packets += encoder.encode(None)
    encode_ms = (spent + time.process_time() - started) * 1000 / frames
    decoder: Any = av.CodecContext.create("h264", "r")
    decoded = 0
    started = time.process_time()
    for packet in packets:
        for frame in decoder.decode(packet):
            frame.to_ndarray(format="rgb24")
            decoded += 1
    decode_ms = (time.process_time() - started) * 1000 / max(decoded, 1)
    return encode_ms, decode_ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=frame_size, default=[(640, 360), (1280, 720)], metavar="WxH")
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--bitrate-kbps", type=int, default=2000)
    args = parser.parse_args(argv)
    for width, height in args.sizes:
        encode_ms, decode_ms = codec_cost(width, height, args.frames, args.bitrate_kbps)
        print(f"{width}x{height}: encode {encode_ms:.1f} ms CPU/frame (libx264 ultrafast, 1 thread), "
              f"decode {decode_ms:.1f} ms CPU/frame")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
