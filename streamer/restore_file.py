"""Offline restoration of a file: every frame through the full model, no live shortcuts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from tqdm import tqdm

from engines import Engine
from streamer.config import ExposureConfig
from streamer.exposure import ExposureCorrector
from streamer.graph.frames import Frame
from streamer.window import TemporalWindow

log = logging.getLogger(__name__)


class FileRestorer:
    """Decode -> window -> engine -> encode, synchronously, frame by frame."""

    def __init__(self, engine: Engine, lossless: bool = False, crf: int = 16, window_size: int | None = None,
                 lookahead: int | None = None, exposure: ExposureConfig | None = None) -> None:
        """``exposure``: brighten dark scenes after restoration, as a camera's ``exposure`` does."""
        self.engine = engine
        self.exposure = ExposureCorrector(exposure) if exposure is not None and exposure.enabled else None
        self.lossless = lossless
        self.crf = crf
        info = engine.info
        size = window_size or info.window
        self.window = TemporalWindow(info.window, info.reference_index, size,
                                     info.lookahead if lookahead is None else lookahead)
        self.frames_written = 0

    def _open_output(self, path: Path, width: int, height: int, rate: Fraction) -> tuple[Any, Any]:
        container: Any = av.open(str(path), "w")
        if self.lossless:
            stream = container.add_stream("ffv1", rate=rate)
            stream.pix_fmt = "bgr0"
        else:
            stream = container.add_stream("libx264", rate=rate)
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(self.crf), "preset": "medium"}
        stream.width, stream.height = width, height
        return container, stream

    def run(self, source: Path, target: Path, progress: bool = True,
            on_frame: Callable[[int], None] | None = None) -> int:
        """Restore ``source`` into ``target``; ``on_frame(frames written)`` after each frame. Returns the count."""
        if self.lossless and target.suffix.lower() != ".mkv":
            raise ValueError("--lossless writes FFV1, which needs a .mkv output")
        with av.open(str(source)) as reader:
            if not reader.streams.video:
                raise ValueError(f"{source} has no video stream")
            stream = reader.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or Fraction(25)
            total = stream.frames or None
            output: Any = None
            out_stream: Any = None
            bar = tqdm(total=total, unit="frame", disable=not progress, desc=source.name)

            def advance() -> None:
                bar.update(1)
                if on_frame is not None:
                    on_frame(self.frames_written)

            try:
                for index, decoded in enumerate(reader.decode(stream)):
                    frame = Frame(decoded.to_ndarray(format="rgb24"), index / float(rate), 0.0, index)
                    for ready, neighbours in self.window.push(frame):
                        output, out_stream = self._write(ready, neighbours, target, rate, output, out_stream)
                        advance()
                for ready, neighbours in self.window.flush():
                    output, out_stream = self._write(ready, neighbours, target, rate, output, out_stream)
                    advance()
                if out_stream is not None:
                    for packet in out_stream.encode(None):
                        output.mux(packet)
            finally:
                bar.close()
                if output is not None:
                    output.close()
        return self.frames_written

    def _write(self, frame: Frame, neighbours: list[Frame], target: Path, rate: Fraction, output: Any,
               out_stream: Any) -> tuple[Any, Any]:
        restored = self.engine.infer([item.image for item in neighbours])
        if self.exposure is not None:
            restored = self.exposure.correct(Frame(restored, frame.timestamp, 0.0, frame.seq)).image
        height, width = restored.shape[:2]
        if not self.lossless:
            restored = restored[: height - height % 2, : width - width % 2]
        if output is None:
            output, out_stream = self._open_output(target, restored.shape[1], restored.shape[0], rate)
        video = av.VideoFrame.from_ndarray(np.ascontiguousarray(restored), format="rgb24")
        video.pts = self.frames_written
        video.time_base = 1 / rate
        for packet in out_stream.encode(video):
            output.mux(packet)
        self.frames_written += 1
        return output, out_stream
