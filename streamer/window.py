"""Sliding temporal windows around the frame being restored."""

from __future__ import annotations

from collections import deque

from streamer.graph.frames import Frame


class TemporalWindow:
    """Collects frames and hands out, for each frame in order, the frames the model restores it from.

    The model wants ``model_window`` frames with the frame to restore at ``model_reference``. The user's
    window (``size`` frames, ``lookahead`` of them in the future) limits which neighbours may be used:
    a model offset outside ``[-(size-1-lookahead), lookahead]`` is clamped to the nearest allowed one,
    and offsets before the first or after the last frame are edge-padded. ``lookahead=0`` is causal
    (lowest latency); ``lookahead=(size-1)//2`` is centred. A discontinuity (reconnect, size change)
    flushes what is pending and starts afresh, so no window mixes the two sides of a gap.
    """

    def __init__(self, model_window: int, model_reference: int, size: int, lookahead: int) -> None:
        if not 0 <= model_reference < model_window:
            raise ValueError("model_reference must index into the model window")
        if size < 1 or not 0 <= lookahead < size:
            raise ValueError("lookahead must be within the window")
        self.model_window = model_window
        self.model_reference = model_reference
        self.size = size
        self.lookahead = lookahead
        self.past = size - 1 - lookahead
        self.resets = 0
        self._frames: deque[Frame] = deque()
        self._first_index = 0  # absolute index of _frames[0]
        self._next_index = 0  # absolute index of the next frame to hand out
        self._count = 0  # frames pushed since the last reset

    def __len__(self) -> int:
        return len(self._frames)

    def push(self, frame: Frame) -> list[tuple[Frame, list[Frame]]]:
        ready: list[tuple[Frame, list[Frame]]] = []
        if self._frames and (frame.discontinuity or frame.size != self._frames[-1].size):
            ready.extend(self.flush())
            self.resets += 1
        self._frames.append(frame)
        self._count += 1
        while self._next_index + self.lookahead <= self._count - 1:
            ready.append(self._take())
        return ready

    def flush(self) -> list[tuple[Frame, list[Frame]]]:
        """Hand out every pending frame (future edge-padded) and start afresh."""
        ready = [self._take() for _ in range(self._next_index, self._count)]
        self.reset()
        return ready

    def reset(self) -> None:
        """Drop everything pending (after a failure): the next frame starts a new window."""
        self._frames.clear()
        self._first_index = self._next_index = self._count = 0

    def _take(self) -> tuple[Frame, list[Frame]]:
        index = self._next_index
        last = self._count - 1
        neighbours = []
        for offset in range(-self.model_reference, self.model_window - self.model_reference):
            allowed = min(max(offset, -self.past), self.lookahead)
            source = min(max(index + allowed, self._first_index), last)
            neighbours.append(self._frames[source - self._first_index])
        frame = self._frames[index - self._first_index]
        self._next_index += 1
        # Frames older than anything a later window can use are let go.
        while self._first_index < self._next_index - self.past:
            self._frames.popleft()
            self._first_index += 1
        return frame, neighbours
