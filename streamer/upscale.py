"""One output size for a camera whose model upscales (``streamer.scale`` > 1, e.g. ``lite-sr2``).

The model makes frames ``scale`` times the camera's size, but not every frame comes out of it: frames the
degradation ladder restored with a model that does not upscale (``fast``, ``half``, ``temporal``), and frames
that go out unrestored (the engine busy or late), are the camera's size. Viewers, recorders and the encoder
want one size for the life of the stream (a size change is a new SPS, and players and NVRs handle that
badly), so ``OutputScaler`` brings those frames up to the output size with swscale's bicubic, on the encoder's
worker thread, and counts them: ``upscaled`` says how many frames a viewer got bicubic instead of the model.

An unrestored frame is scaled as the decoder's YUV frame (no RGB round trip, about a quarter of the work).
"""

from __future__ import annotations

from streamer.graph.frames import Frame
from streamer.ladder import scale as scale_rgb

INTERPOLATION = "BICUBIC"


class OutputScaler:
    """``scaler(frame)``: ``frame`` at ``factor`` times its camera frame's size (itself where it is already)."""

    def __init__(self, factor: int) -> None:
        if factor < 1:
            raise ValueError("an output scale is at least 1")
        self.factor = factor
        self.upscaled = 0  # frames brought to the output size here, not by the model

    def __call__(self, frame: Frame) -> Frame:
        camera = frame.original if frame.original is not None else frame
        width, height = camera.size
        target = (width * self.factor, height * self.factor)
        if frame.size == target:
            return frame
        self.upscaled += 1
        if frame.video is not None and not frame.restored:  # the decoder's frame: scaled as YUV
            scaled = Frame(None, frame.timestamp, frame.wallclock, frame.seq, frame.discontinuity,
                           video=frame.resized_video(*target), original=camera)
        else:
            scaled = Frame(scale_rgb(frame.image, target, INTERPOLATION), frame.timestamp, frame.wallclock, frame.seq,
                           frame.discontinuity, restored=frame.restored, original=camera, level=frame.level)
        scaled.level_switch = frame.level_switch
        return scaled
