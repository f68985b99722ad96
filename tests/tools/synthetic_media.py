"""Tiny synthetic media for the tools tests (no external data needed)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np


def textured_image(height: int, width: int, seed: int) -> np.ndarray:
    """Random smooth colour texture with edges, uint8 [H, W, 3]."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
    image = np.kron(coarse, np.ones((8, 8, 1)))[:height, :width]
    image += rng.normal(0, 6, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def moving_frames(count: int, height: int, width: int, seed: int) -> np.ndarray:
    canvas = textured_image(height + 2 * count, width + 2 * count, seed)
    return np.stack([canvas[i : i + height, 2 * i : 2 * i + width] for i in range(count)])


def write_clip(path: Path, frames: np.ndarray) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(25, 1))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "12", "preset": "ultrafast"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def write_png(path: Path, image: np.ndarray) -> Path:
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "rgb24"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def write_sequence(folder: Path, frames: np.ndarray) -> Path:
    """An image-sequence clip: ``folder`` with one numbered PNG per frame."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        write_png(folder / f"{index:05d}.png", frame)
    return folder


def export_tiny_model(
    folder: Path,
    causal: bool,
    weight_std: float,
    detail_width: int = 0,
    recurrent: int = 0,
    context_width: int = 0,
) -> tuple[Any, Path]:
    """A random-weight ``tiny`` model (with a half-resolution detail path of ``detail_width`` channels or a
    low-resolution context path of ``context_width`` when given, recurrent as ``recurrent`` says) exported to
    ``folder/tiny.onnx``; returns (torch model, ONNX path)."""
    import dataclasses

    import torch

    from engines.arch import build_model, preset
    from tools import export_onnx

    torch.manual_seed(0)
    config = preset("tiny", causal=causal)
    model = build_model(
        dataclasses.replace(
            config,
            detail_width=detail_width,
            detail_depth=1,
            recurrent=recurrent,
            context_width=context_width,
            context_depth=1,
            depth=2 if context_width else config.depth,  # the path joins the trunk's middle layer
        )
    )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, weight_std)
    checkpoint = folder / "tiny.pt"
    torch.save({"config": model.config.to_dict(), "model": model.state_dict()}, checkpoint)
    out = folder / "tiny.onnx"
    export_onnx.main(["--checkpoint", str(checkpoint), "--out", str(out), "--check-size", "24", "40"])
    return model, out
