"""The engine interface shared by every backend (after Polygraphy's runner lifecycle)."""

from __future__ import annotations

import abc
import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

INPUT_NAME = "frames"
STATE_NAME = "state"  # a recurrent model's second input: the running estimate the previous call returned
NEXT_STATE_NAME = "next_state"  # ... and its second output: the estimate the next call takes
OUTPUT_NAME = "restored"


class EngineError(RuntimeError):
    """An engine that cannot be built or run; the message says why."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a model expects, read from the ``streamer.*`` metadata of its ONNX file."""

    name: str = "passthrough"
    window: int = 1
    reference_index: int = 0
    scale: int = 1
    pad_multiple: int = 1
    colorspace: str = "rgb"
    value_range: str = "0-1"
    precision: str = "float"
    recurrent: bool = False  # carries a state from call to call (streamer.recurrent=1)

    @property
    def lookahead(self) -> int:
        return self.window - 1 - self.reference_index

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], default_name: str = "model") -> ModelInfo:
        def integer(key: str, default: int, low: int, high: int) -> int:
            raw = metadata.get(f"streamer.{key}", str(default))
            try:
                value = int(raw)
            except ValueError:
                raise EngineError(f"model metadata streamer.{key}={raw!r} is not an integer") from None
            if not low <= value <= high:
                raise EngineError(f"model metadata streamer.{key}={value} is outside {low}..{high}")
            return value

        window = integer("window", 5, 1, 31)
        info = cls(
            name=metadata.get("streamer.name", default_name),
            window=window,
            reference_index=integer("reference_index", (window - 1) // 2, 0, window - 1),
            scale=integer("scale", 1, 1, 4),
            pad_multiple=integer("pad_multiple", 1, 1, 64),
            colorspace=metadata.get("streamer.colorspace", "rgb"),
            value_range=metadata.get("streamer.range", "0-1"),
            precision=metadata.get("streamer.precision", "float"),
            recurrent=bool(integer("recurrent", 0, 0, 1)),
        )
        if info.colorspace != "rgb" or info.value_range != "0-1":
            raise EngineError(
                f"model wants colorspace={info.colorspace} range={info.value_range}; only rgb 0-1 is supported"
            )
        return info


class Engine(abc.ABC):
    """Lifecycle: ``activate`` (load/build), ``infer`` (any number of times), ``deactivate``.

    ``infer`` takes the window as a list of ``window`` RGB uint8 frames (H x W x 3, oldest first) and
    returns the restored reference frame as RGB uint8 (H*scale x W*scale x 3). Calls are blocking: run
    them in a worker thread; the engine serialises them (and ``deactivate``) with its own lock.
    """

    backend = "base"
    passes_through = False  # True for an engine that returns the reference frame untouched
    device = "cpu"  # where it computes: engines on one device share one scheduler (streamer.inference)
    max_batch = 64  # the most windows ``infer_batch`` takes at once
    # windows a scheduler batches by default: on the CPU a batch of 2 costs as much per window as 2 calls
    # (lite int8 at 640x360: 9.7 ms a window alone, 10.2 batched by 2, 11.0 by 4), so 1; GPUs set more
    preferred_batch = 1

    # calls that may run at once (a scheduler runs this many workers on it); 1 for backends whose state is
    # per call (buffers, a CUDA stream); ONNX Runtime sessions take concurrent runs
    concurrent_calls = 1

    def __init__(self) -> None:
        self.info = ModelInfo()
        self.active = False
        # calls in progress; deactivate waits for them, and never runs beside one
        self._state = threading.Condition()
        self._running = 0
        self.calls = 0
        self.seconds_total = 0.0

    def __enter__(self) -> Engine:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def activate(self) -> None:
        with self._state:
            if not self.active:
                self._activate()
                self.active = True

    def deactivate(self) -> None:
        """Refuses new calls, waits for those in progress (in other threads), then frees the engine."""
        with self._state:
            if self.active:
                self.active = False
                while self._running:
                    self._state.wait()
                self._deactivate()

    @contextlib.contextmanager
    def calling(self) -> Iterator[None]:
        """One call's turn: at most ``concurrent_calls`` at once, only while the engine is active."""
        with self._state:
            while self.active and self._running >= self.concurrent_calls:
                self._state.wait()
            if not self.active:
                raise EngineError(f"{self.backend} engine used before activate() or after deactivate()")
            self._running += 1
        try:
            yield
        finally:
            with self._state:
                self._running -= 1
                self._state.notify_all()

    def infer(self, window: list[np.ndarray]) -> np.ndarray:
        if len(window) != self.info.window:
            raise EngineError(f"engine wants {self.info.window} frames, got {len(window)}")
        with self.calling():
            started = time.perf_counter()
            result = self._infer(window)
            self._count(1, time.perf_counter() - started)
        return result

    def infer_batch(self, windows: list[list[np.ndarray]], streams: list[str] | None = None) -> list[np.ndarray]:
        """Restore several windows of one frame size in one call; returns their frames in order. ``streams``
        names whose window each is (an engine may keep per-stream state, such as converted frames; calls
        that run at once never share a stream)."""
        if not windows:
            raise EngineError("infer_batch needs at least one window")
        if streams is not None and len(streams) != len(windows):
            raise EngineError(f"{len(windows)} windows but {len(streams)} stream names")
        if len(windows) > self.max_batch:
            raise EngineError(f"batch of {len(windows)} windows: must be 1..{self.max_batch}")
        for window in windows:
            if len(window) != self.info.window:
                raise EngineError(f"engine wants {self.info.window} frames, got {len(window)}")
        with self.calling():
            started = time.perf_counter()
            results = self._infer_batch(windows, streams or [""] * len(windows))
            self._count(len(windows), time.perf_counter() - started)
        return results

    def _count(self, windows: int, seconds: float) -> None:
        with self._state:
            self.calls += windows
            self.seconds_total += seconds

    def forget(self, stream: str) -> None:
        """Drop what the engine keeps for ``stream`` (it stopped using the engine)."""
        return None

    def recurrent_counts(self, stream: str | None = None) -> tuple[int, int] | None:
        """A recurrent model's (windows fed the previous state, windows restarted from their reference frame)
        for ``stream`` (None: every stream this engine serves); None for a window model or a backend that keeps
        no state."""
        return None

    @abc.abstractmethod
    def _activate(self) -> None: ...

    def _infer_batch(self, windows: list[list[np.ndarray]], streams: list[str]) -> list[np.ndarray]:
        return [self._infer(window) for window in windows]

    @abc.abstractmethod
    def _infer(self, window: list[np.ndarray]) -> np.ndarray: ...

    def _deactivate(self) -> None:
        return None

    def describe(self) -> str:
        precision = "" if self.info.precision == "float" else f" {self.info.precision}"
        return f"{self.backend}:{self.info.name}{precision} (window {self.info.window}, lookahead {self.info.lookahead})"
