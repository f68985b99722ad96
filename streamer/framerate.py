"""A stream's frame rate measured from its frame timestamps."""

from __future__ import annotations

import statistics
from collections import deque
from fractions import Fraction

# Rates cameras and files really use; a measurement this close to one of them is taken to be it.
COMMON_RATES = [Fraction(rate) for rate in (5, 6, 8, 10, 12, 15, 20, 24, 25, 30, 48, 50, 60, 90, 100, 120)] + [
    Fraction(25, 2),
    Fraction(15, 2),
    Fraction(24000, 1001),
    Fraction(30000, 1001),
    Fraction(60000, 1001),
]
SNAP_TOLERANCE = 0.015
MIN_RATE, MAX_RATE = Fraction(1, 10), Fraction(240)
MAX_INTERVAL_S = 10.0


def nice_rate(fps: float) -> Fraction:
    """``fps`` as an exact fraction: the nearest common rate within 1.5 %, else rounded to 1/100 fps."""
    closest = min(COMMON_RATES, key=lambda rate: abs(float(rate) - fps))
    if abs(float(closest) - fps) <= SNAP_TOLERANCE * fps:
        return closest
    return min(max(Fraction(round(fps * 100), 100), MIN_RATE), MAX_RATE)


class FrameRateMeter:
    """The frame rate over the last ``window`` frame intervals.

    The median interval is the frame period to a first approximation. An interval about k times as long
    counts as k frame slots, so frames dropped on the way do not lower the rate, and the slots are
    counted against the time they span, which averages out jittery timestamps; a variable-rate camera
    reads as its mean rate. While more than a quarter of the intervals fit no multiple of the median
    (a camera changing its rate: both rates are in the window) there is no measurement, so the
    encoder never re-opens at a rate halfway between. Intervals across a discontinuity (a reconnect: the
    gap is an outage, not a frame interval), backwards or longer than 10 s are not counted.
    """

    OFF_GRID = 0.3
    MAX_OFF_GRID_SHARE = 0.25

    def __init__(self, window: int = 31, min_intervals: int = 4) -> None:
        self.min_intervals = min_intervals
        self._intervals: deque[float] = deque(maxlen=window)
        self._last: float | None = None

    def add(self, timestamp: float, discontinuity: bool = False) -> None:
        if self._last is not None and not discontinuity:
            interval = timestamp - self._last
            if 0 < interval <= MAX_INTERVAL_S:
                self._intervals.append(interval)
        self._last = timestamp

    @property
    def ready(self) -> bool:
        return len(self._intervals) >= self.min_intervals

    def rate(self) -> Fraction | None:
        """The measured rate; None until ``min_intervals`` intervals were seen, and while it changes."""
        if not self.ready:
            return None
        typical = statistics.median(self._intervals)
        slots = span = 0.0
        on_grid = 0
        for interval in self._intervals:
            multiple = round(interval / typical)
            if multiple >= 1 and abs(interval / typical - multiple) <= self.OFF_GRID:
                slots += multiple
                span += interval
                on_grid += 1
        if on_grid < (1 - self.MAX_OFF_GRID_SHARE) * len(self._intervals):
            return None
        return nice_rate(slots / span)
