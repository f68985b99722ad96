"""Pre- and post-processing shared by every neural backend (CPU and GPU take the same tensors)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")
UNIT = np.float32(1.0 / 255.0)  # an 8-bit value's step in the models' [0, 1] range
MAX_STREAMS = 256  # per-stream entries an engine keeps for streams that never said forget(): the oldest goes


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def pack_window(frames: list[np.ndarray], multiple: int, dtype: type = np.float32) -> np.ndarray:
    """N RGB uint8 frames (H x W x 3) -> float32 tensor [1, N*3, Hp, Wp] in [0, 1], edge-padded; with
    ``dtype=np.uint8`` the frames' own values, not scaled (an int8 graph that reads uint8: engines.int8_graph)."""
    height, width = frames[0].shape[:2]
    padded_h, padded_w = padded_size(height, width, multiple)
    out: np.ndarray = np.empty((1, 3 * len(frames), padded_h, padded_w), dtype=dtype)
    for index, frame in enumerate(frames):
        if frame.shape[:2] != (height, width):
            raise ValueError("all frames of a window must have the same size")
        planes = out[0, 3 * index : 3 * index + 3]
        if out.dtype == np.uint8:
            planes[:, :height, :width] = frame.transpose(2, 0, 1)
        else:
            np.multiply(frame.transpose(2, 0, 1), UNIT, out=planes[:, :height, :width])
        if padded_h != height:
            planes[:, height:, :width] = planes[:, height - 1 : height, :width]
        if padded_w != width:
            planes[:, :, width:] = planes[:, :, width - 1 : width]
    return out


def unpack_output(tensor: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 [1, 3, Hp, Wp] in [0, 1] -> RGB uint8 H x W x 3 (cropped). Scales ``tensor`` in place:
    quantise plane by plane (contiguous), interleave the bytes last (the cheap order)."""
    planes = tensor[0, :, :height, :width]
    np.multiply(planes, 255.0, out=planes)
    np.add(planes, 0.5, out=planes)
    np.clip(planes, 0.0, 255.0, out=planes)
    return np.ascontiguousarray(planes.astype(np.uint8).transpose(1, 2, 0))


class WindowPacker:
    """``pack_window`` for a sliding window: each frame is converted to float once, not once per window.

    Converted planes are cached by frame identity (the cache holds the frame, so an id is never reused
    while cached) and forgotten as soon as the frame leaves the window.
    """

    def __init__(self, multiple: int, dtype: type = np.float32) -> None:
        self.multiple = multiple
        self.dtype = dtype  # np.uint8 for a graph that reads the frames' bytes (engines.int8_graph)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._out: np.ndarray | None = None
        self.recurrent = RecurrentState()  # used by engines that run a recurrent model

    def pack(self, frames: list[np.ndarray]) -> np.ndarray:
        height, width = frames[0].shape[:2]
        padded_h, padded_w = padded_size(height, width, self.multiple)
        shape = (1, 3 * len(frames), padded_h, padded_w)
        if self._out is None or self._out.shape != shape:
            self._out = np.empty(shape, dtype=self.dtype)
            self._cache.clear()
        cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for index, frame in enumerate(frames):
            if frame.shape[:2] != (height, width):
                raise ValueError("all frames of a window must have the same size")
            key = id(frame)
            entry = cache.get(key) or self._cache.get(key)
            if entry is None:
                entry = (frame, pack_window([frame], self.multiple, self.dtype)[0])
            cache[key] = entry
            self._out[0, 3 * index : 3 * index + 3] = entry[1]
        self._cache = cache
        return self._out


def reference_planes(packed: np.ndarray, reference_index: int) -> np.ndarray:
    """The reference frame's planes [B, 3, Hp, Wp] of packed windows [B, N*3, Hp, Wp]: a recurrent model's state
    at a stream's first frame (float in [0, 1], also from windows packed as uint8)."""
    start = 3 * reference_index
    planes = packed[:, start : start + 3]
    return planes * UNIT if planes.dtype == np.uint8 else planes


class RecurrentState:
    """A recurrent model's state for one stream (the ``next_state`` of its last call), fed back only to the
    window that follows it.

    The state is kept with the frame it was computed for; the next call uses it when that frame sits just before
    its reference frame (the window slid by one frame), and otherwise (a stream's first frame, a frame restored
    by another ladder level, a dropped frame, a size change) feeds the reference frame itself, as in training.
    """

    def __init__(self) -> None:
        self._frame: np.ndarray | None = None
        self._output: Any = None  # numpy on the CPU engine, a device tensor on the PyTorch backend
        self.continued = 0  # windows fed the previous window's state
        self.restarted = 0  # windows fed their reference frame (a stream's start or a gap)

    def carried(self, frames: list[np.ndarray], reference_index: int, size: tuple[int, int]) -> Any:
        """The state kept for the window ``frames`` (padded to ``size``), or None where it restarts from its
        reference frame; counted either way."""
        previous = frames[reference_index - 1] if reference_index > 0 else None
        output = self._output
        if previous is not None and previous is self._frame and output is not None:
            if tuple(output.shape[-2:]) == tuple(size):
                self.continued += 1
                return output
        self.restarted += 1
        return None

    def feed(self, frames: list[np.ndarray], reference_index: int, packed: np.ndarray) -> np.ndarray:
        """The ``state`` input [1, 3, Hp, Wp] for the window ``frames`` packed as ``packed`` [1, N*3, Hp, Wp]."""
        output = self.carried(frames, reference_index, packed.shape[-2:])
        return reference_planes(packed, reference_index) if output is None else np.asarray(output)

    def keep(self, frames: list[np.ndarray], reference_index: int, state: Any, copy: bool = True) -> None:
        """Remember ``state`` [1, 3, Hp, Wp] for the window after ``frames``: a float32 copy, or (``copy=False``)
        the caller's own array or tensor as it is."""
        self._frame = frames[reference_index]
        self._output = np.array(state, dtype=np.float32, copy=True) if copy else state


class PerStream(Generic[T]):
    """What an engine keeps for each stream it serves (a window packer, a recurrent state), made on first use, at
    most ``MAX_STREAMS`` of them (the oldest goes first), safe to use from the inference threads and the loop."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._items: dict[str, T] = {}
        self._lock = threading.Lock()

    def get(self, stream: str) -> T:
        with self._lock:
            item = self._items.get(stream)
            if item is None:
                if len(self._items) >= MAX_STREAMS:
                    del self._items[next(iter(self._items))]
                item = self._items[stream] = self._make()
            return item

    def select(self, stream: str | None = None) -> list[T]:
        """The entry of ``stream`` (every entry for None), if any."""
        with self._lock:
            return [item for name, item in self._items.items() if stream is None or name == stream]

    def forget(self, stream: str) -> None:
        with self._lock:
            self._items.pop(stream, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def recurrent_totals(states: list[RecurrentState]) -> tuple[int, int]:
    """(windows fed the previous state, windows restarted from their reference frame) over ``states``."""
    return sum(state.continued for state in states), sum(state.restarted for state in states)
