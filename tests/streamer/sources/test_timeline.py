"""The source timeline: monotonic, no bursts, no holes, whatever the camera's timestamps do."""

from __future__ import annotations

import time

import numpy as np

from streamer.sources.base import Timeline


def mapped(timeline: Timeline, locals_: list[float]) -> np.ndarray:
    return np.array([timeline.map(local) for local in locals_])


def test_camera_spacing_is_kept_including_a_variable_rate() -> None:
    rng = np.random.default_rng(1)
    intervals = rng.uniform(0.03, 0.09, 50)  # a variable-rate camera
    locals_ = list(1000.0 + np.cumsum(intervals))
    out = mapped(Timeline(), locals_)
    assert np.allclose(np.diff(out), np.diff(locals_))


def test_backward_jump_is_re_anchored_one_interval_later_not_squeezed() -> None:
    timeline = Timeline()
    before = mapped(timeline, [5.0 + i * 0.04 for i in range(20)])
    after = mapped(timeline, [1.0 + i * 0.04 for i in range(20)])  # the camera's clock went back 4.8 s
    out = np.concatenate([before, after])
    steps = np.diff(out)
    assert np.all(steps > 0), "timestamps went backwards"
    assert np.allclose(steps, 0.04), f"burst or hole at the jump: {steps.min():.4f}..{steps.max():.4f} s"
    assert timeline.jumps == 1


def test_forward_jump_beyond_the_wallclock_is_re_anchored() -> None:
    timeline = Timeline()
    before = mapped(timeline, [i * 0.1 for i in range(10)])
    after = mapped(timeline, [3600 + i * 0.1 for i in range(10)])  # an hour ahead in 0.1 s of wallclock
    steps = np.diff(np.concatenate([before, after]))
    assert np.allclose(steps, 0.1)
    assert timeline.jumps == 1


def test_a_gap_that_really_passed_is_kept() -> None:
    timeline = Timeline()
    timeline.map(0.0)
    time.sleep(0.3)  # the camera sent nothing for 0.3 s and its clock moved on by as much: not a jump
    assert abs(timeline.map(0.3) - timeline.map(0.34) + 0.04) < 1e-9
    assert timeline.jumps == 0


def test_a_new_segment_starts_after_the_old_one_and_not_before_the_wallclock() -> None:
    created = time.monotonic()
    timeline = Timeline()
    first = mapped(timeline, [50.0 + i * 0.04 for i in range(5)])
    time.sleep(0.3)
    timeline.new_segment()  # a reconnect: the camera's timestamps restart
    elapsed = time.monotonic() - created
    second = mapped(timeline, [0.0, 0.04])
    assert second[0] > first[-1] + 0.04 - 1e-9
    assert second[0] >= elapsed - 0.01, "the outage must show as the time that passed"
    assert abs(second[1] - second[0] - 0.04) < 1e-9
    assert timeline.jumps == 0
