"""Large frames in overlapping tiles: a thin wrapper around an activated engine.

``TiledEngine`` cuts every frame of a window into the same overlapping tiles, restores each tile's window
with the inner engine (one ``infer_batch`` per tile size in a row of tiles, as many as the inner engine
takes per call) and blends the restored tiles back with a raised-cosine ramp across each overlap, so that no seam
shows. Tile edges sit on the model's ``pad_multiple`` grid, so a tile sees the same pixel grid as the whole
frame; the overlap covers the model's receptive field, so away from the ramp's ends a tile's pixels equal
the whole-frame ones. Memory: one tile window (the inner engine's tensors for one tile) plus a float32
band of one tile row of the output and the uint8 output frame; never a float tensor of the whole window.

    engine = maybe_tiled(activate_engine("cpu", "lite"), tile=512, overlap=32)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from engines.base import Engine, EngineError

DEFAULT_TILE = 512
DEFAULT_OVERLAP = 32  # seam PSNR vs overlap in README "Large frames: tiles" (lite, lite-detail)


@dataclass(frozen=True, slots=True)
class Tile:
    """One tile of a plan: rows ``y0:y1``, columns ``x0:x1`` of the frame."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0


def plan_axis(length: int, tile: int, overlap: int, multiple: int = 1) -> list[tuple[int, int]]:
    """Spans ``(start, end)`` covering ``0..length`` with tiles of at most ``tile`` pixels overlapping by at
    least ``overlap``. Starts are multiples of ``multiple``; every span but the last has the same size (a
    multiple of ``multiple``, shrunk from ``tile`` to spread the tiles evenly); the last one runs to
    ``length`` and can be up to ``multiple - 1`` pixels longer than the others. A length that fits in one
    tile is one span."""
    if length < 1 or multiple < 1:
        raise ValueError(f"length {length} and multiple {multiple} must be positive")
    blocks = -(-length // multiple)  # the axis in blocks of ``multiple`` pixels (the last may be partial)
    tile_blocks = max(1, tile // multiple)
    overlap_blocks = -(-max(0, overlap) // multiple)
    if blocks <= tile_blocks:
        return [(0, length)]
    if overlap_blocks >= tile_blocks:
        raise ValueError(f"overlap {overlap} must be smaller than the tile {tile} (aligned to {multiple})")
    count = -(-(blocks - overlap_blocks) // (tile_blocks - overlap_blocks))
    # the smallest common size for ``count`` tiles that still overlap by ``overlap_blocks``
    size = -(-(blocks + (count - 1) * overlap_blocks) // count)
    last_start = blocks - size
    spans = []
    for index in range(count):
        start = round(index * last_start / (count - 1)) * multiple
        end = length if index == count - 1 else min(length, start + size * multiple)
        spans.append((start, end))
    return spans


def plan_tiles(height: int, width: int, tile: int, overlap: int, multiple: int = 1) -> list[Tile]:
    """The grid of tiles for a ``height`` x ``width`` frame, row by row (see ``plan_axis``)."""
    rows = plan_axis(height, tile, overlap, multiple)
    columns = plan_axis(width, tile, overlap, multiple)
    return [Tile(y0, y1, x0, x1) for y0, y1 in rows for x0, x1 in columns]


def ramp(length: int, blend: int | None = None) -> np.ndarray:
    """Raised-cosine weights 0 -> 1 over ``length`` pixels (pixel centres), rising over the central
    ``blend`` pixels only (0 before, 1 after). ``ramp(n, b) + ramp(n, b)[::-1] == 1``."""
    blend = length if blend is None else max(1, min(blend, length))
    margin = (length - blend) / 2
    t = np.clip((np.arange(length, dtype=np.float64) + 0.5 - margin) / blend, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * t)


def axis_weights(spans: Sequence[tuple[int, int]], scale: int = 1, blend: int | None = None) -> list[np.ndarray]:
    """Per span, float32 weights over its output pixels (``scale`` x its length): 1 inside, a ramp down
    across each overlap with the next span and up across each overlap with the previous one; normalised so
    that the weights of all spans sum to 1 at every pixel of the axis."""
    length = spans[-1][1] * scale
    weights = []
    for index, (start, end) in enumerate(spans):
        weight = np.ones((end - start) * scale)
        if index > 0:
            overlap = (spans[index - 1][1] - start) * scale
            weight[:overlap] *= ramp(overlap, blend)
        if index + 1 < len(spans):
            overlap = (end - spans[index + 1][0]) * scale
            weight[weight.size - overlap :] *= ramp(overlap, blend)[::-1]
        weights.append(weight)
    total = np.zeros(length)
    for (start, _), weight in zip(spans, weights, strict=True):
        total[start * scale : start * scale + weight.size] += weight
    if np.any(total <= 0):  # only where more than two tiles overlap and a blend leaves a gap
        raise ValueError("tile weights leave pixels uncovered; use a wider blend or a smaller overlap")
    return [
        (weight / total[start * scale : start * scale + weight.size]).astype(np.float32)
        for (start, _), weight in zip(spans, weights, strict=True)
    ]


class _Layout:
    """A plan for one frame size: tile rows and columns with their output weights."""

    def __init__(self, height: int, width: int, tile: int, overlap: int, multiple: int, scale: int,
                 blend: int | None) -> None:
        self.rows = plan_axis(height, tile, overlap, multiple)
        self.columns = plan_axis(width, tile, overlap, multiple)
        self.row_weights = axis_weights(self.rows, scale, blend)
        self.column_weights = axis_weights(self.columns, scale, blend)
        self.scale = scale

    @property
    def tiles(self) -> int:
        return len(self.rows) * len(self.columns)


class TiledEngine(Engine):
    """``inner`` (activated here if it is not yet) applied tile by tile to frames larger than one tile;
    smaller frames go to ``inner.infer`` untouched. ``blend`` is the width of the ramp inside each overlap
    (None: the whole overlap)."""

    def __init__(self, inner: Engine, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                 blend: int | None = None, batch: bool = True, above_pixels: int = 0) -> None:
        """``above_pixels``: frames of at most this many pixels go to ``inner`` whole (tiles cost time: only
        the frames whose whole-frame tensors would be too big are worth tiling)."""
        super().__init__()
        self.above_pixels = above_pixels
        multiple = inner.info.pad_multiple
        if tile < multiple or overlap < 0 or -(-overlap // multiple) >= tile // multiple:
            raise EngineError(f"tile {tile} / overlap {overlap} do not fit the model's multiple {multiple}")
        self.inner = inner
        self.info = inner.info
        self.backend = inner.backend
        self.device = inner.device
        self.passes_through = inner.passes_through
        self.tile = tile
        self.overlap = overlap
        self.blend = blend
        # a row's tiles of one size go to the inner engine in one call (a GPU batches them; a shared engine
        # queues them at once); batch=False: one call per tile
        self._inner_batch: Callable[[list[list[np.ndarray]]], list[np.ndarray]] | None = inner.infer_batch if batch else None
        self.active = inner.active
        self._layouts: dict[tuple[int, int], _Layout] = {}

    def _activate(self) -> None:
        self.inner.activate()

    def _deactivate(self) -> None:
        self.inner.deactivate()
        self._layouts.clear()

    def recurrent_counts(self, stream: str | None = None) -> tuple[int, int] | None:
        return self.inner.recurrent_counts(stream)

    def describe(self) -> str:
        above = f"frames over {self.above_pixels} pixels " if self.above_pixels else ""
        return f"{self.inner.describe()} ({above}in tiles of {self.tile}, overlap {self.overlap})"

    def layout(self, height: int, width: int) -> _Layout:
        key = (height, width)
        layout = self._layouts.get(key)
        if layout is None:
            if len(self._layouts) >= 8:
                self._layouts.clear()
            layout = _Layout(height, width, self.tile, self.overlap, self.info.pad_multiple, self.info.scale,
                             self.blend)
            self._layouts[key] = layout
        return layout

    def _infer(self, window: list[np.ndarray]) -> np.ndarray:
        height, width = window[0].shape[:2]
        if any(frame.shape[:2] != (height, width) for frame in window):
            raise EngineError("all frames of a window must have the same size")
        if height * width <= self.above_pixels:
            return self.inner.infer(window)
        layout = self.layout(height, width)
        if layout.tiles == 1:
            return self.inner.infer(window)
        scale = layout.scale
        channels = window[0].shape[2]
        out = np.empty((height * scale, width * scale, channels), dtype=np.uint8)
        band_rows = max(y1 - y0 for y0, y1 in layout.rows) * scale
        band = np.zeros((band_rows, width * scale, channels), dtype=np.float32)
        band_top = 0  # output row of band[0]
        for (y0, y1), row_weight in zip(layout.rows, layout.row_weights, strict=True):
            top = y0 * scale
            if top > band_top:  # rows above this tile row are final: no later tile reaches them
                done = top - band_top
                _round_into(out[band_top:top], band[:done])
                kept = band_rows - done
                band[:kept] = band[done:].copy()
                band[kept:] = 0.0
                band_top = top
            restored = self._restore_row(window, y0, y1, layout.columns)
            for (x0, _), column_weight, tile_out in zip(layout.columns, layout.column_weights, restored,
                                                         strict=True):
                rows, cols = tile_out.shape[:2]
                target = band[top - band_top : top - band_top + rows, x0 * scale : x0 * scale + cols]
                weighted = tile_out * column_weight[None, :, None]
                weighted *= row_weight[:, None, None]
                target += weighted
        _round_into(out[band_top:], band[: height * scale - band_top])
        return out

    def _restore_row(self, window: list[np.ndarray], y0: int, y1: int,
                     columns: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        windows = [[frame[y0:y1, x0:x1] for frame in window] for x0, x1 in columns]
        if self._inner_batch is None:
            return [self.inner.infer(tile_window) for tile_window in windows]
        results: list[np.ndarray | None] = [None] * len(windows)
        sizes: dict[tuple[int, int], list[int]] = {}
        for index, tile_window in enumerate(windows):
            sizes.setdefault(tile_window[0].shape[:2], []).append(index)
        step = max(1, self.inner.max_batch)
        for same_size in sizes.values():
            for start in range(0, len(same_size), step):  # as many per call as the inner engine takes
                indices = same_size[start : start + step]
                batch = self._inner_batch([windows[index] for index in indices])
                for index, result in zip(indices, batch, strict=True):
                    results[index] = result
        return [result for result in results if result is not None]


def _round_into(out: np.ndarray, values: np.ndarray) -> None:
    """Float values in 0..255 rounded half up into uint8 ``out`` (what the engines' unpacking does)."""
    np.add(values, 0.5, out=values)
    np.clip(values, 0.0, 255.0, out=values)
    out[...] = values  # unsafe cast truncates, i.e. rounds the +0.5 values half up


def maybe_tiled(engine: Engine, tile: int | None = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                blend: int | None = None, above_pixels: int = 0) -> Engine:
    """``engine`` in tiles, or ``engine`` itself where tiling would change nothing: ``tile`` None or 0, or
    an engine that passes frames through."""
    if not tile or engine.passes_through:
        return engine
    return TiledEngine(engine, tile=tile, overlap=overlap, blend=blend, above_pixels=above_pixels)
