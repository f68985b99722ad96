"""The ladder's levels on real pictures and its controller's decisions: down at once when frames miss their
deadline, up after a quiet wait, a failed probe doubles the wait (no oscillation)."""

from __future__ import annotations

import itertools

import numpy as np

from engines import activate_engine
from streamer.ladder import TEMPORAL_CLIP, LadderController, ModelLevel, ReducedResolutionLevel, TemporalLevel
from tests.media import add_noise, clean_frames, psnr

INTERVAL = 0.04  # 25 fps


def run(controller: LadderController, seconds: float, missed: bool, start: float, cost: float | None = None) -> float:
    now = start
    while now < start + seconds:
        if cost is not None:
            controller.observe(controller.level, cost, now)
        controller.frame(missed, INTERVAL, now)
        now += INTERVAL
    return now


def test_steps_down_at_once_and_probes_up_after_a_quiet_wait() -> None:
    controller = LadderController(["full", "half", "temporal"], probe_after_s=10.0, grace_frames=0)
    controller.start(0.0)
    now = run(controller, 0.2, missed=True, start=0.0)  # 3 misses in a row: down within 3 frames
    assert controller.level == "half" and controller.changes["down"] == 1
    assert controller.reason == "3 of the last 3 frames missed; full costs not measured yet"
    now = run(controller, 9.5, missed=False, start=now)
    assert controller.level == "half"  # not before probe_after_s
    now = run(controller, 1.0, missed=False, start=now)
    assert controller.level == "full" and controller.changes["up"] == 1


def test_a_failed_probe_doubles_the_wait_so_the_level_does_not_oscillate() -> None:
    controller = LadderController(["full", "half"], probe_after_s=5.0, grace_frames=0)
    controller.start(0.0)
    now = run(controller, 0.2, missed=True, start=0.0)
    ups = []
    for _ in range(4):  # the machine cannot afford "full": every probe fails within a few frames
        while controller.level == "half":
            now = run(controller, INTERVAL, missed=False, start=now)
        ups.append(now)
        now = run(controller, 0.2, missed=True, start=now)
        assert controller.level == "half"
    gaps = [later - earlier for earlier, later in itertools.pairwise(ups)]
    assert gaps[0] > 9 and gaps[1] > 19 and gaps[2] > 39, gaps


def test_a_level_measured_too_slow_for_the_frame_interval_is_left() -> None:
    controller = LadderController(["full", "half"], probe_after_s=5.0, grace_frames=0)
    controller.start(0.0)
    run(controller, 0.5, missed=False, start=0.0, cost=0.056)  # 56 ms a frame at 25 fps: no skip yet, too slow
    assert controller.level == "half" and controller.reason == "full costs 56 ms"


def test_a_probe_is_not_judged_on_the_cold_first_frames_of_its_level() -> None:
    controller = LadderController(["full", "half"], probe_after_s=5.0, grace_frames=0)
    controller.start(0.0)
    now = run(controller, 0.2, missed=True, start=0.0)
    assert controller.level == "half"
    while controller.level == "half":  # until the probe, after the quiet wait
        now = run(controller, INTERVAL, missed=False, start=now, cost=0.010)
    for cold in (0.058, 0.054):  # the level's first runs after the switch (measured live: a 15 ms model)
        controller.observe("full", cold, now)
        controller.frame(False, INTERVAL, now)
        now += INTERVAL
    now = run(controller, 2.0, missed=False, start=now, cost=0.020)
    assert controller.level == "full" and controller.changes["down"] == 1
    assert controller.costs["full"].seconds == 0.020  # the cold frames are not in its cost
    # a level that stays slow after its cold frames is still left, within a few frames
    run(controller, 0.4, missed=False, start=now, cost=0.056)
    assert controller.level == "half"


def test_levels_restore_real_noise() -> None:
    clean = clean_frames(320, 176, 5)
    noisy = add_noise(clean, 15.0)
    engine = activate_engine("cpu", "lite", threads=2)
    try:
        base = psnr(noisy[2], clean[2])
        full = ModelLevel("full", engine).restore(list(noisy), 2)
        half = ReducedResolutionLevel(engine).restore(list(noisy), 2)
        temporal = TemporalLevel().restore(list(noisy), 2)
    finally:
        engine.deactivate()
    gains = [psnr(image, clean[2]) - base for image in (full, half, temporal)]
    assert gains[0] > max(gains[1:]) and min(gains[1:]) > 0.5, gains  # each level restores, the model most
    assert half.shape == temporal.shape == noisy[2].shape and half.dtype == np.uint8


def test_temporal_filter_in_bands_computes_the_whole_frame_formula() -> None:
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, (75, 40, 3), dtype=np.uint8) for _ in range(5)]  # 75 rows: a partial last band
    frames[4] = frames[4][:60]  # a frame of another size (after a resize) is left out
    base = frames[2].astype(np.int16)
    total = sum(np.clip(frame.astype(np.int16) - base, -TEMPORAL_CLIP, TEMPORAL_CLIP) for frame in frames[:2] + frames[3:4])
    expected = (base + total // 4).astype(np.uint8)
    assert np.array_equal(TemporalLevel().restore(frames, 2), expected)


def test_the_first_frames_are_not_judged() -> None:
    controller = LadderController(["full", "half"], grace_frames=50)
    controller.start(0.0)
    run(controller, 1.9, missed=True, start=0.0)  # 48 slow first runs: no step down
    assert controller.level == "full"
    run(controller, 0.2, missed=True, start=1.9)
    assert controller.level == "half"
