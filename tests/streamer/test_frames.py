"""Frame: the decoder's frame converted once, and safely when several threads ask for it at once (the
engine's worker, a raw tap's sender thread, the encoder)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np

from streamer.graph.frames import Frame

ROOT = Path(__file__).resolve().parents[2]

# Three threads at once on each decoded frame: two full-size RGB conversions (the engine and a raw rgb24
# tap) and a downscale (a raw tap with `width`). Run in a child process: before the fix PyAV's per-frame
# scaler, shared by the threads without the GIL, crashed (SIGSEGV) or hung the process within seconds.
STRESS = textwrap.dedent("""
    import sys, threading
    import av, numpy as np
    from streamer.graph.frames import Frame
    rgb = np.random.default_rng(0).integers(0, 255, (360, 640, 3), dtype=np.uint8)
    for _ in range(20):
        frames = [Frame(None, 0.0, 0.0, seq, video=av.VideoFrame.from_ndarray(rgb, format="rgb24")
                        .reformat(format="yuv420p")) for seq in range(30)]
        work = [lambda f: f.image, lambda f: f.image, lambda f: f.scaled(320, 180),
                lambda f: f.yuv(640, 360, "nv12", lambda video: bytes(video.planes[0]))]
        threads = [threading.Thread(target=lambda job=job: [job(f) for f in frames]) for job in work]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(f.image.shape == (360, 640, 3) for f in frames)
    print("ok")
""")


def yuv_frame(rgb: np.ndarray) -> Frame:
    return Frame(None, 0.0, 0.0, 0, video=av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p"))


def test_image_is_converted_once_and_kept() -> None:
    frame = yuv_frame(np.full((64, 96, 3), 128, np.uint8))
    assert frame.size == (96, 64)
    first = frame.image
    assert first.shape == (64, 96, 3) and frame.image is first


def test_scaled_from_the_decoder_frame_and_from_an_array() -> None:
    rgb = np.full((64, 96, 3), (200, 40, 90), np.uint8)
    decoded = yuv_frame(rgb).scaled(48, 32)
    from_array = Frame(rgb, 0.0, 0.0, 0).scaled(48, 32)
    assert decoded.shape == from_array.shape == (32, 48, 3)
    assert np.abs(decoded.astype(int) - from_array.astype(int)).max() < 8  # YUV 4:2:0 round trip


def test_concurrent_conversions_of_the_same_frames_neither_crash_nor_hang() -> None:
    result = subprocess.run([sys.executable, "-c", STRESS], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", (result.returncode, result.stderr[-2000:])
