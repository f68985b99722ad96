"""A camera that publishes to us over WebRTC (WHIP): a browser, OBS, a phone.

The WHIP endpoint (``streamer.webrtc.whip``) attaches one publisher at a time; its decoded frames arrive
on the event loop (``offer``), wait in a small bounded queue (the oldest dropped and counted when the
pipeline is behind), and the source's worker thread hands them to the pipeline like any camera's.
"""

from __future__ import annotations

import logging
import queue
from typing import Any

from streamer.config import WhipSourceConfig
from streamer.sources.base import Source

log = logging.getLogger(__name__)

QUEUE_FRAMES = 8


class WhipSource(Source):
    def __init__(self, config: WhipSourceConfig, name: str) -> None:
        super().__init__(name)
        self.config = config
        self.publisher: str | None = None  # the WHIP session publishing now
        self.dropped = 0  # frames dropped because the pipeline was behind
        self._frames: queue.Queue[Any] = queue.Queue(QUEUE_FRAMES)

    def attach(self, session: str) -> bool:
        """Take ``session`` as the publisher; False while another one publishes (the caller answers 409)."""
        if self.publisher is not None:
            return False
        self.publisher = session
        self.stats.connects += 1
        self.stats.connected = True
        self.mark_discontinuity()  # a new publisher is a new segment: its clock starts anew
        return True

    def detach(self, session: str) -> None:
        if self.publisher == session:
            self.publisher = None
            self.stats.connected = False

    def offer(self, session: str, frame: Any) -> None:
        """A decoded ``av.VideoFrame`` of the publisher (on the event loop; never blocks)."""
        if session != self.publisher:
            return
        while True:
            try:
                self._frames.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self._frames.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _produce(self) -> None:
        while not self.stopping:
            try:
                frame = self._frames.get(timeout=0.25)
            except queue.Empty:
                continue
            local = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
            self.emit(None, local, video=frame)
