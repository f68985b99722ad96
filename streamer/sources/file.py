"""A video file played as a live camera, at its own frame rate, optionally looped."""

from __future__ import annotations

import logging

import av

from streamer.config import FileSourceConfig
from streamer.sources.base import Pacer, Source

log = logging.getLogger(__name__)


class FileSource(Source):
    def __init__(self, config: FileSourceConfig, name: str) -> None:
        super().__init__(name)
        self.config = config

    def _produce(self) -> None:
        pacer = Pacer(self)
        loop_offset = 0.0
        while not self.stopping:
            try:
                container = av.open(self.config.path)
            except (av.error.FFmpegError, OSError) as error:
                self.stats.last_error = str(error)
                log.error("source %s: cannot open %s: %s", self.name, self.config.path, error)
                return
            with container:
                if not container.streams.video:
                    log.error("source %s: %s has no video stream", self.name, self.config.path)
                    return
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                if loop_offset > 0:
                    self.mark_discontinuity()  # the loop's end and start are different scenes
                rate = float(stream.average_rate or 25)
                self.fps_hint = rate
                self.stats.connected = True
                last = loop_offset
                index = 0
                for frame in container.decode(stream):
                    if frame.pts is not None and frame.time_base:
                        local = float(frame.pts * frame.time_base)
                    else:
                        local = index / rate
                    if index == 0:
                        first = local
                    timestamp = loop_offset + local - first
                    index += 1
                    if not pacer.wait(timestamp):
                        return
                    self.emit(None, timestamp, video=frame)
                    last = timestamp
            if not self.config.loop or index == 0:
                return
            loop_offset = last + 1.0 / rate
