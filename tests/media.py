"""Small test media made by the tests themselves (no external files)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from streamer.sources.demo import DemoScene


def yuv420_roundtrip(image: np.ndarray) -> np.ndarray:
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    return frame.to_ndarray(format="rgb24")


def clean_frames(width: int, height: int, count: int, seed: int = 3) -> list[np.ndarray]:
    """Natural-looking moving content from the demo scene generator, as a camera's YUV 4:2:0 carries it
    (so that a perfect restoration of what the camera sends can match it)."""
    scene = DemoScene(width, height, seed)
    return [yuv420_roundtrip(scene.frame(index * 3, 25.0)) for index in range(count)]


def add_noise(frames: list[np.ndarray], sigma: float, seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        np.clip(frame.astype(np.float32) + rng.normal(0, sigma, frame.shape), 0, 255).astype(np.uint8)
        for frame in frames
    ]


def write_clip(path: Path, frames: list[np.ndarray], codec: str, options: dict[str, str], fps: int = 25) -> Path:
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def write_lossless(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    """FFV1 in Matroska: what the camera serves is exactly these pixels (before its own encode)."""
    return write_clip(path, frames, "ffv1", {}, fps)


def write_h264(path: Path, frames: list[np.ndarray], fps: int = 25, crf: int = 18) -> Path:
    return write_clip(path, frames, "libx264", {"crf": str(crf), "preset": "ultrafast"}, fps)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def best_match_psnr(frame: np.ndarray, references: list[np.ndarray]) -> float:
    """PSNR against the reference frame it matches best (viewers join a looping clip anywhere)."""
    return max(psnr(frame, reference) for reference in references)


def read_video(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
