"""Extra views of a camera, encoded only while someone watches them: the raw feed, and raw | restored.

The compare view puts the camera's frame and the restored frame made from it side by side in one picture
(left raw, right restored), so the two halves are the same instant by construction: two separate streams
would drift apart by the window look-ahead and the inference time. The page's split slider draws from
this one picture.

Each view has its own hub (``<camera>/raw``, ``<camera>/compare``), its own encoder (same settings as the
camera's) and one worker thread; it takes at most one frame at a time and skips (counts) frames that
arrive while the previous one is still being encoded, so it never slows the restored stream.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable

import numpy as np

from streamer.config import EncoderConfig
from streamer.encoder import H264Encoder
from streamer.graph.frames import AccessUnit, Frame
from streamer.hub import KeyframeGate, StreamHub

log = logging.getLogger(__name__)

VIEWS = ("raw", "compare")


def raw_frame(frame: Frame) -> Frame:
    return frame.original if frame.original is not None else frame


def compose(frame: Frame) -> Frame:
    """Raw | restored, side by side, at the restored frame's size (an unrestored frame shows twice); where the
    model upscales, the raw half is the camera's frame scaled to that size (what a player's scaler would show)."""
    restored = frame.image
    camera = raw_frame(frame)
    raw = camera.image if camera.size == frame.size else camera.scaled(restored.shape[1], restored.shape[0])
    image = np.concatenate([raw, restored], axis=1)
    return Frame(image, frame.timestamp, frame.wallclock, frame.seq, frame.discontinuity)


class EncodedView:
    """One extra view: ``offer`` every output frame of the camera (on the event loop)."""

    def __init__(self, camera: str, kind: str, config: EncoderConfig) -> None:
        if kind not in VIEWS:
            raise ValueError(f"unknown view {kind!r}")
        self.kind = kind
        self.hub = StreamHub(f"{camera}/{kind}")
        self.encoder = H264Encoder(config)
        self.hub.keyframes = KeyframeGate(self.encoder.request_keyframe, config.keyframe_request_interval_s)
        self.make: Callable[[Frame], Frame] = raw_frame if kind == "raw" else compose
        self.skipped = 0  # frames not encoded because the previous one was still in the encoder
        self.errors = 0
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"view-{kind}-{camera}")
        self._busy = False
        self._open = False

    @property
    def watched(self) -> bool:
        return bool(self.hub.subscriptions)

    def offer(self, frame: Frame) -> None:
        if not self.watched:
            if self._open and not self._busy:
                self._open = False
                self._executor.submit(self.encoder.reset)  # the next viewer starts from a fresh IDR
            return
        if self._busy:
            self.skipped += 1
            return
        self._busy = True
        self._open = True
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._encode, frame)
        future.add_done_callback(self._publish)

    def _encode(self, frame: Frame) -> list[AccessUnit]:
        return self.encoder.encode(self.make(frame))

    def _publish(self, future: asyncio.Future[list[AccessUnit]]) -> None:
        self._busy = False
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.errors += 1
            if self.errors % 100 == 1:  # the first failure, then one line per 100
                log.error("view %s: encoding failed (%d time(s)): %s", self.hub.name, self.errors, error)
            self.encoder.reset()
            return
        for unit in future.result():
            self.hub.publish(unit)

    def close(self) -> None:
        self.hub.close()
        self._executor.shutdown(wait=False)


class CameraViews:
    """The raw and compare views of one camera, fed by its encode stage."""

    def __init__(self, camera: str, config: EncoderConfig) -> None:
        self.views = {kind: EncodedView(camera, kind, config) for kind in VIEWS}

    def offer(self, frame: Frame) -> None:
        for view in self.views.values():
            view.offer(frame)

    def hubs(self) -> dict[str, StreamHub]:
        return {view.hub.name: view.hub for view in self.views.values()}

    def close(self) -> None:
        for view in self.views.values():
            view.close()
