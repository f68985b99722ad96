"""A wallclock barcode burnt into frames, read back by viewers to measure glass-to-glass latency.

64 cells in a strip at the bottom of the frame: 44 bits of wallclock milliseconds, 12 bits of the frame
sequence number and an 8-bit checksum. Each cell is black or white, wide enough to survive noise,
compression and restoration.
"""

from __future__ import annotations

import numpy as np

CELLS = 64
STRIP_HEIGHT = 16
_MS_BITS = 44
_SEQ_BITS = 12


def _checksum(value: int) -> int:
    total = 0
    while value:
        total = (total * 31 + (value & 0xFF)) & 0xFF
        value >>= 8
    return total ^ 0xA5


def draw_timecode(image: np.ndarray, wallclock_ms: int, seq: int) -> None:
    """Burn the code into ``image`` (H x W x 3 uint8, modified in place)."""
    height, width = image.shape[:2]
    cell = width // CELLS
    if cell < 4 or height < STRIP_HEIGHT * 2:
        return
    payload = (wallclock_ms & ((1 << _MS_BITS) - 1)) << _SEQ_BITS | (seq & ((1 << _SEQ_BITS) - 1))
    word = payload << 8 | _checksum(payload)
    bits = [(word >> (CELLS - 1 - index)) & 1 for index in range(CELLS)]
    row = np.repeat(np.array(bits, dtype=np.uint8) * 255, cell)
    strip = image[height - STRIP_HEIGHT :, : cell * CELLS]
    strip[:] = row[None, :, None]


def read_timecode(image: np.ndarray) -> tuple[int, int] | None:
    """(wallclock_ms, seq) from a frame carrying the code, or None where there is none."""
    height, width = image.shape[:2]
    cell = width // CELLS
    if cell < 4 or height < STRIP_HEIGHT * 2:
        return None
    strip = image[height - STRIP_HEIGHT + 4 : height - 4, : cell * CELLS].astype(np.float32).mean(axis=(0, 2))
    cells = strip.reshape(CELLS, cell)[:, cell // 4 : cell - cell // 4].mean(axis=1)
    word = 0
    for level in cells:
        word = word << 1 | int(level > 127)
    payload, check = word >> 8, word & 0xFF
    if _checksum(payload) != check:
        return None
    return payload >> _SEQ_BITS, payload & ((1 << _SEQ_BITS) - 1)
