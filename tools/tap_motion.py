"""Example tap consumer: a motion detector that prints events with their capture timestamps.

Subscribes to a frame tap (see README "Frame taps (ZeroMQ)"), compares each frame with the previous one
at a small grey scale and prints a line when the share of changed pixels reaches --min-area (motion
starts) and when it has stayed below half of that for --hold seconds (motion ends):

    streamer run demo --taps &
    python tools/tap_motion.py                                  # tcp://127.0.0.1:5555, every stream's restored tap
    python tools/tap_motion.py --topic gate/raw --min-area 0.02 --pattern pull   # one worker of a PUSH tap
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamer.config import DEFAULT_TAP_ENDPOINT  # noqa: E402
from streamer.taps.client import TapClient, TapFrame  # noqa: E402


class MotionDetector:
    """Per stream: the previous small grey frame, whether motion is on and when it was last seen.

    Motion starts on the first frame whose changed share reaches ``min_area``; it ends once no frame has
    reached half of that for ``hold_s`` seconds of the stream's time (hysteresis and a hold, so an object
    moving slowly or noise near the threshold does not print a start and an end every other frame)."""

    def __init__(self, threshold: int, min_area: float, hold_s: float = 1.0) -> None:
        self.threshold = threshold
        self.min_area = min_area
        self.hold_s = hold_s
        self._previous: dict[str, np.ndarray] = {}
        self._moving: dict[str, bool] = {}
        self._last_motion: dict[str, float] = {}

    @staticmethod
    def small_grey(luma: np.ndarray) -> np.ndarray:
        step = max(1, luma.shape[1] // 160)
        return luma[::step, ::step].astype(np.int16)

    def update(self, frame: TapFrame) -> str | None:
        """An event line when motion starts or ends on the frame's topic, else None."""
        topic = frame.header.topic
        grey = self.small_grey(frame.luma)  # the Y plane as is for an i420/nv12 tap
        previous = self._previous.get(topic)
        self._previous[topic] = grey
        if previous is None or previous.shape != grey.shape:
            return None
        area = float((np.abs(grey - previous) > self.threshold).mean())
        now = frame.header.seconds
        was_moving = self._moving.get(topic, False)
        if area >= (self.min_area / 2 if was_moving else self.min_area):
            self._last_motion[topic] = now
            moving = True
        else:
            moving = was_moving and now - self._last_motion.get(topic, now) < self.hold_s
        if moving == was_moving:
            return None
        self._moving[topic] = moving
        when = datetime.datetime.fromtimestamp(frame.header.wallclock).isoformat(timespec="milliseconds")
        state = "motion start" if moving else "motion end"
        return f"{when} {topic} seq={frame.header.seq} pts={frame.header.seconds:.3f}s {state} ({area:.1%} changed)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("endpoint", nargs="?", default=DEFAULT_TAP_ENDPOINT, help="tap endpoint to connect to")
    parser.add_argument("--topic", action="append", help="topic prefix, e.g. gate/restored (default: */restored)")
    parser.add_argument("--pattern", choices=["sub", "pull"], default="sub", help="sub for PUB taps, pull for PUSH")
    parser.add_argument("--threshold", type=int, default=25, help="grey-level change that counts (0-255)")
    parser.add_argument("--min-area", type=float, default=0.01, help="share of changed pixels that is motion")
    parser.add_argument("--hold", type=float, default=1.0, help="seconds without motion before it ends")
    parser.add_argument("--frames", type=int, default=0, help="stop after this many frames (0 = never)")
    args = parser.parse_args(argv)
    detector = MotionDetector(args.threshold, args.min_area, args.hold)
    seen = 0
    with TapClient(args.endpoint, topics=args.topic or [""], pattern=args.pattern) as client:
        try:
            for frame in client:
                if args.topic is None and frame.header.tap != "restored":
                    continue
                event = detector.update(frame)
                if event is not None:
                    print(event, flush=True)
                seen += 1
                if args.frames and seen >= args.frames:
                    break
        except KeyboardInterrupt:
            pass
    print(f"# {seen} frames, {client.gaps} lost (gaps in seq)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
