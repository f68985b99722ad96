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


def test_motion_starts_and_ends_after_the_hold() -> None:
    still = np.full((90, 160, 3), 80, np.uint8)
    moved = still.copy()
    moved[20:60, 40:100] = 200  # a bright object enters, and stays
    detector = MotionDetector(threshold=25, min_area=0.01, hold_s=1.0)
    frames = [still, still, moved] + [moved] * 30  # 25 fps: 1.2 s without change after the object came
    events = [detector.update(tap_frame(seq, image)) for seq, image in enumerate(frames)]
    assert events[:2] == [None, None]
    assert events[2] is not None and "cam/restored seq=2" in events[2] and "motion start" in events[2]
    ended = [seq for seq, event in enumerate(events) if event is not None and "motion end" in event]
    assert ended == [27], events  # the first frame 1 s (25 frames) after the last change
    assert all(event is None for event in events[28:])


def test_motion_near_the_threshold_does_not_flap() -> None:
    """A small object moving every other frame (the demo's car at 25 fps): one start, no end while it moves."""
    base = np.full((90, 160, 3), 80, np.uint8)
    images = []
    for seq in range(50):
        image = base.copy()
        x = 10 + 2 * (seq // 2)  # moves two pixels every second frame: 1.1 % of the pixels change, then none
        image[30:70, x:x + 40] = 200
        images.append(image)
    detector = MotionDetector(threshold=25, min_area=0.01, hold_s=1.0)
    events = [event for seq, image in enumerate(images) if (event := detector.update(tap_frame(seq, image)))]
    assert len(events) == 1 and "motion start" in events[0], events
