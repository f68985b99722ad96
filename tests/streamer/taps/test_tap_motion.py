"""tools/tap_motion.py: motion start and end events from a tap's frames, with their capture time."""

from __future__ import annotations

import numpy as np

from streamer.taps.client import TapFrame
from streamer.taps.wire import TapHeader
from tools.tap_motion import MotionDetector


def tap_frame(seq: int, image: np.ndarray) -> TapFrame:
    header = TapHeader(1, "cam", "restored", seq, seq * 3600, (1, 90000), 1_700_000_000 + seq / 25,
                       image.shape[1], image.shape[0], "rgb24", True, "test")
    return TapFrame(header, image, image.nbytes)


def test_motion_starts_and_ends() -> None:
    still = np.full((90, 160, 3), 80, np.uint8)
    moved = still.copy()
    moved[20:60, 40:100] = 200  # a bright object enters
    detector = MotionDetector(threshold=25, min_area=0.01)
    frames = [still, still, moved, moved, moved]
    events = [detector.update(tap_frame(seq, image)) for seq, image in enumerate(frames)]
    assert events[:2] == [None, None]
    assert events[2] is not None and "cam/restored seq=2" in events[2] and "motion start" in events[2]
    assert events[3] is not None and "motion end" in events[3]
    assert events[4] is None
