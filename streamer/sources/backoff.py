"""When to try a lost camera again: often at first, then the configured stepped pauses."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence


class ReconnectSchedule:
    """Attempt times for one camera.

    A camera that restarts (a reboot of its streaming process, a power blip) is usually back within a
    few seconds, and every moment spent asleep after it returned is a moment viewers see nothing. So
    for the first ``fast_for_s`` seconds after the camera was lost it is tried every ``fast_s``; after
    that the pauses follow ``steps_s`` (the last one repeating), so a camera that stays down is not
    hammered. Pauses are measured from the start of one attempt to the start of the next: an attempt
    that took long by itself (a camera that accepts the connection and never answers) is not followed
    by a full pause as well.
    """

    def __init__(
        self,
        fast_s: float,
        fast_for_s: float,
        steps_s: Sequence[float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not steps_s:
            raise ValueError("at least one backoff step is needed")
        self.fast_s = fast_s
        self.fast_for_s = fast_for_s
        self.steps_s = list(steps_s)
        self.attempts = 0
        self._clock = clock
        self._lost_at = clock()
        self._attempt_at = self._lost_at
        self._slow_failures = 0

    def lost(self) -> None:
        """A connection that delivered frames has ended: the next attempts are the quick ones again."""
        self._lost_at = self._clock()
        self._slow_failures = 0

    def attempt(self) -> None:
        """An attempt starts now."""
        self._attempt_at = self._clock()
        self.attempts += 1

    def since_attempt(self) -> float:
        """Seconds since the current attempt started."""
        return self._clock() - self._attempt_at

    @property
    def fast(self) -> bool:
        """Still in the quick phase after the loss."""
        return self._clock() - self._lost_at < self.fast_for_s

    def pause(self) -> float:
        """Seconds to wait before the next attempt, after the current one failed."""
        if self.fast:
            interval = self.fast_s
        else:
            interval = self.steps_s[min(self._slow_failures, len(self.steps_s) - 1)]
            self._slow_failures += 1
        return max(0.0, self._attempt_at + interval - self._clock())
