"""The degradation ladder: restore every frame at the best level the machine can afford now.

Levels, best first (a camera's ladder holds those its configuration allows):

- ``full``: the configured model at full resolution;
- ``fast``: a cheaper model (``lite`` under ``lite-detail``) at full resolution;
- ``half`` and ``quarter``: the cheapest model on the frames downscaled 2x / 4x, upsampled back, with a fifth
  of the camera frame's own fine detail put back;
- ``cpu`` (only when the levels above run on a GPU): the cheapest model on ONNX Runtime on the CPU, at half
  resolution by default: where a GPU fails (out of memory, device lost) its frames are still restored;
- ``temporal``: a classical filter, the reference frame averaged with the window's other frames, each
  difference clipped to ±``TEMPORAL_CLIP`` (so moving edges do not ghost): a few ms, no model;
- then nothing: frames go out unrestored only when even that is late (counted by reason, as before).

``LadderController`` picks the level from the stream's own frame interval and what the levels cost: it
steps down at once when frames miss their deadline (skipped while the engine was busy, or late) and probes
one level up after a quiet ``probe_after_s``, measuring that level's cost afresh (the load may have changed);
a probe that fails (frames missed, or the level's first costs over the interval) doubles the wait before
the next one (up to ``MAX_PROBE_AFTER_S``), so the level does not oscillate: on a machine that can never
afford the level above, a probe costs a few frames every two minutes.

A level that raises (a GPU out of memory, a device lost, a backend error) does not cost its frame: the
restore stage tries the levels below it in the same call, and the ladder moves at once to the one that
worked (``LadderController.failed``); probes back up follow the same doubling waits.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import av
import numpy as np

from engines import Engine

log = logging.getLogger(__name__)

TEMPORAL_CLIP = 20  # grey levels: most sensor noise passes the clip, a moving edge does not
TEMPORAL_BAND_ROWS = 32  # rows the temporal filter computes at a time (16-32 measured best at 1080p)
MAX_PROBE_AFTER_S = 120.0
COLD_SAMPLES = 2  # a level's first frames after a switch, not averaged into its cost (LevelCost)


class Level:
    """One way of restoring a window's reference frame; ``restore`` runs in the engine's worker thread."""

    name = "level"
    model: str | None = None  # the model it runs (None: no model)

    def restore(self, frames: list[np.ndarray], reference: int) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


class ModelLevel(Level):
    def __init__(self, name: str, engine: Engine) -> None:
        self.name = name
        self.engine = engine
        self.model = engine.info.name

    def restore(self, frames: list[np.ndarray], reference: int) -> np.ndarray:
        return self.engine.infer(frames)

    def describe(self) -> str:
        return self.engine.describe()


class ReducedResolutionLevel(Level):
    """The model on the window downscaled ``factor`` x (2: 'half', 4: 'quarter'), upsampled back, plus ``DETAIL_GAIN`` of the camera frame's own
    fine detail (what the downscale removed). Each frame is downscaled once, not once per window.

    Measured on noise (tests/streamer/test_ladder.py's scene, 640x352, σ15 / σ25): the upsampled restoration
    alone +5.1 / +9.2 dB, with a fifth of the detail put back +5.7 / +9.1 dB; adding only the upsampled
    restored *residual* to the full-resolution frame keeps the noise above half the Nyquist rate: +0.1 dB."""

    def describe(self) -> str:
        return self.engine.describe() + (f" at 1/{self.factor} resolution" if self.factor > 1 else "")

    def __init__(self, engine: Engine, factor: int = 2, detail_gain: float = 0.2, cache: int = 8,
                 name: str | None = None) -> None:
        self.name = name or {1: "whole", 2: "half", 4: "quarter"}.get(factor, f"1/{factor}")
        self.factor = factor
        self.engine = engine
        self.model = engine.info.name
        self.detail_gain = detail_gain
        self._small: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id(frame) -> (frame, its small copy)
        self._cache = cache

    def _downscaled(self, frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        known = self._small.get(id(frame))
        if known is not None and known[0] is frame and known[1].shape[1::-1] == size:
            return known[1]
        small = scale(frame, size, "AREA")
        self._small[id(frame)] = (frame, small)  # the frame is held, so its id is not reused meanwhile
        while len(self._small) > self._cache:
            del self._small[next(iter(self._small))]
        return small

    def restore(self, frames: list[np.ndarray], reference: int) -> np.ndarray:
        if self.factor == 1:
            return self.engine.infer(frames)
        height, width = frames[reference].shape[:2]
        size = (max(2, width // self.factor // 2 * 2), max(2, height // self.factor // 2 * 2))
        small = [self._downscaled(frame, size) for frame in frames]
        restored = self.engine.infer(small)
        if restored.shape != small[reference].shape:  # an upscaling model: its output is the restoration, resized
            return restored if restored.shape[:2] == (height, width) else scale(restored, (width, height), "BICUBIC")
        restored = restored.astype(np.int32)
        # up(restored) + g * (frame - up(small)) == g * frame + (1 - g) * up(u), u = (restored - g * small) / (1 - g):
        # one upsample instead of two, and the full-resolution blend in integers
        gain = round(256 * self.detail_gain)
        base = (restored * 256 - gain * small[reference].astype(np.int32)) // (256 - gain)
        upsampled = scale(np.clip(base, 0, 255).astype(np.uint8), (width, height), "BILINEAR")
        out = upsampled.astype(np.uint16)
        out *= 256 - gain
        out += gain * frames[reference].astype(np.uint16)
        out >>= 8
        return out.astype(np.uint8)


class TemporalLevel(Level):
    """The reference averaged with the window's other frames, each difference clipped to ±TEMPORAL_CLIP (so a
    moving edge moves the result by at most TEMPORAL_CLIP / window): no model. Computed in bands of
    ``TEMPORAL_BAND_ROWS`` rows, whose int16 intermediates stay in the CPU's cache: 11.8 ms at 1080p where the
    whole frame at once took 22.3 (the same result; tests/streamer/test_ladder.py)."""

    name = "temporal"

    def describe(self) -> str:
        return f"temporal filter (the window's frames, differences clipped to {TEMPORAL_CLIP})"

    def restore(self, frames: list[np.ndarray], reference: int) -> np.ndarray:
        image = frames[reference]
        others = [frame for index, frame in enumerate(frames) if index != reference and frame.shape == image.shape]
        out = np.empty_like(image)
        for top in range(0, image.shape[0], TEMPORAL_BAND_ROWS):
            band = slice(top, top + TEMPORAL_BAND_ROWS)
            base = image[band].astype(np.int16)
            total = np.zeros_like(base)
            for frame in others:
                difference = frame[band].astype(np.int16)
                difference -= base
                np.clip(difference, -TEMPORAL_CLIP, TEMPORAL_CLIP, out=difference)
                total += difference
            total //= 1 + len(others)
            base += total
            out[band] = base
        return out


def scale(image: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """Resize an RGB image with swscale (a few ms at 720p; numpy's box filter costs ten times that)."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    return frame.reformat(width=size[0], height=size[1], interpolation=interpolation).to_ndarray()


@dataclass
class LevelCost:
    """Smoothed seconds a level takes per frame (None until measured), how many frames measured it, and when it
    was last measured. The first ``COLD_SAMPLES`` frames after a (re)start are counted but not averaged: right
    after a switch a level runs cold (the other model's weights in the caches, a new size's buffers; measured:
    54-58 ms for a 15 ms model), and one such frame seeding the average failed every probe."""

    seconds: float | None = None
    observed_at: float = 0.0
    samples: int = 0

    def observe(self, value: float, now: float, weight: float = 0.2) -> None:
        self.samples += 1
        self.observed_at = now
        if self.samples <= COLD_SAMPLES:
            return
        self.seconds = value if self.seconds is None else (1 - weight) * self.seconds + weight * value


@dataclass
class LadderController:
    levels: list[str]
    probe_after_s: float = 10.0
    miss_window: int = 25  # frames looked back on for misses (1 s at 25 fps)
    max_misses: int = 2  # more misses than this in the window: step down
    headroom: float = 1.0  # a level whose smoothed cost is over this share of the frame interval is too slow
    grace_frames: int = 50  # frames after the start not judged: an engine's first runs are slow (allocations)
    cost_samples: int = 5  # a level's cost is judged once this many frames measured it (cold ones included)
    index: int = 0
    changes: dict[str, int] = field(default_factory=lambda: {"down": 0, "up": 0})
    costs: dict[str, LevelCost] = field(default_factory=dict)
    _outcomes: deque[bool] = field(default_factory=deque)  # True = a miss
    _since: float = 0.0  # when the current level was entered
    _wait: float = 0.0  # probe wait now (doubles after a failed probe)
    _probing_from: int | None = None  # the level a probe left, to return to on failure
    reason: str = ""  # why the last step down happened (for the log)

    def __post_init__(self) -> None:
        if not self.levels:
            raise ValueError("a ladder needs at least one level")
        self._wait = self.probe_after_s
        for name in self.levels:
            self.costs.setdefault(name, LevelCost())

    @property
    def level(self) -> str:
        return self.levels[self.index]

    @property
    def steady(self) -> bool:
        """No frame missed in the window looked back on (since the last change of level)."""
        return not any(self._outcomes)

    def observe(self, level: str, seconds: float, now: float) -> None:
        self.costs.setdefault(level, LevelCost()).observe(seconds, now)

    def frame(self, missed: bool, interval_s: float, now: float) -> str | None:
        """Record one output frame (``missed``: it went out unrestored or late); the new level when it changes."""
        if self.grace_frames > 0:
            self.grace_frames -= 1
            return None
        self._outcomes.append(missed)
        while len(self._outcomes) > self.miss_window:
            self._outcomes.popleft()
        measured = self.costs[self.level]
        cost = measured.seconds if measured.samples >= self.cost_samples else None
        too_slow = cost is not None and cost > self.headroom * interval_s
        misses = sum(self._outcomes)
        if (misses > self.max_misses or too_slow) and self.index < len(self.levels) - 1:
            cost_text = f"{1000 * cost:.0f} ms" if cost is not None else "not measured yet"
            self.reason = (f"{self.level} costs {cost_text}" if too_slow else
                           f"{misses} of the last {len(self._outcomes)} frames missed; {self.level} costs {cost_text}")
            if self._probing_from is not None:  # the level tried did not hold: wait twice as long next time
                self._wait = min(MAX_PROBE_AFTER_S, self._wait * 2)
                self._probing_from = None
            return self._move(self.index + 1, now, "down")
        if self._probing_from is not None and now - self._since >= 3 * self.probe_after_s:
            self._probing_from, self._wait = None, self.probe_after_s  # the level tried held: short waits again
        if self.index > 0 and now - self._since >= self._wait and self.steady:
            self._probing_from = self.index
            self.costs[self.levels[self.index - 1]] = LevelCost()  # measured afresh: the load may have changed
            return self._move(self.index - 1, now, "up")
        return None

    def failed(self, index: int, now: float) -> str | None:
        """A level above ``index`` raised and level ``index`` restored the frame instead: move there at once
        (a probe that found its level still failing doubles the wait, as a probe that missed frames does).
        The new level, or None when the ladder is already there or lower."""
        if index <= self.index:
            return None
        if self._probing_from is not None:
            self._wait = min(MAX_PROBE_AFTER_S, self._wait * 2)
            self._probing_from = None
        return self._move(min(index, len(self.levels) - 1), now, "down")

    def _move(self, index: int, now: float, direction: str) -> str:
        self.index = index
        self._since = now
        self._outcomes.clear()
        self.changes[direction] += 1
        return self.level

    def start(self, now: float) -> None:
        self._since = now
