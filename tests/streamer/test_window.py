from __future__ import annotations

import numpy as np
import pytest

from streamer.graph.frames import Frame
from streamer.window import TemporalWindow


def frame(seq: int, size: int = 8, discontinuity: bool = False) -> Frame:
    return Frame(np.full((size, size, 3), seq, np.uint8), seq / 25, 0.0, seq, discontinuity)


def ids(neighbours: list[Frame]) -> list[int]:
    return [int(item.image[0, 0, 0]) for item in neighbours]


def run(window: TemporalWindow, frames: list[Frame]) -> list[tuple[int, list[int]]]:
    out = []
    for item in frames:
        out += [(ready.seq, ids(images)) for ready, images in window.push(item)]
    out += [(ready.seq, ids(images)) for ready, images in window.flush()]
    return out


def test_centred_window_with_edge_padding() -> None:
    result = run(TemporalWindow(5, 2, 5, 2), [frame(i) for i in range(6)])
    assert result == [
        (0, [0, 0, 0, 1, 2]),
        (1, [0, 0, 1, 2, 3]),
        (2, [0, 1, 2, 3, 4]),
        (3, [1, 2, 3, 4, 5]),
        (4, [2, 3, 4, 5, 5]),
        (5, [3, 4, 5, 5, 5]),
    ]


def test_centred_window_waits_for_lookahead() -> None:
    window = TemporalWindow(5, 2, 5, 2)
    assert window.push(frame(0)) == [] and window.push(frame(1)) == []
    assert [ready.seq for ready, _ in window.push(frame(2))] == [0]


def test_causal_lookahead_zero_uses_no_future_frames() -> None:
    result = run(TemporalWindow(5, 2, 5, 0), [frame(i) for i in range(4)])
    assert result == [(0, [0, 0, 0, 0, 0]), (1, [0, 0, 1, 1, 1]), (2, [0, 1, 2, 2, 2]), (3, [1, 2, 3, 3, 3])]


def test_smaller_user_window_clamps_offsets() -> None:
    result = run(TemporalWindow(5, 2, 3, 1), [frame(i) for i in range(4)])
    assert result[2] == (2, [1, 1, 2, 3, 3])


def test_discontinuity_flushes_and_resets() -> None:
    window = TemporalWindow(3, 1, 3, 1)
    frames = [frame(0), frame(1), frame(2), frame(10, discontinuity=True), frame(11)]
    result = run(window, frames)
    assert [seq for seq, _ in result] == [0, 1, 2, 10, 11]
    assert result[2] == (2, [1, 2, 2]) and result[3] == (10, [10, 10, 11])
    assert window.resets == 1


def test_size_change_resets() -> None:
    window = TemporalWindow(3, 1, 3, 1)
    result = run(window, [frame(0), frame(1), frame(2, size=16)])
    assert result[1] == (1, [0, 1, 1]) and result[2] == (2, [2, 2, 2])


def test_memory_is_bounded() -> None:
    window = TemporalWindow(5, 2, 5, 2)
    for seq in range(100):
        window.push(frame(seq))
    assert len(window) <= 5


@pytest.mark.parametrize(("size", "lookahead"), [(3, 3), (0, 0)])
def test_invalid_window(size: int, lookahead: int) -> None:
    with pytest.raises(ValueError):
        TemporalWindow(5, 2, size, lookahead)
