"""Exposure correction: a dark scene brought to the target key, a bright one left alone, the gain smoothed over
the camera's clock (no pumping) and reset at a discontinuity, highlights rolled off rather than clipped, and
applied by the encode stage to every frame before its taps and the encoder."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pydantic import ValidationError

from streamer.config import CameraConfig, ExposureConfig
from streamer.encoder import EncodeStage, H264Encoder
from streamer.exposure import (
    LINEAR,
    ExposureCorrector,
    apply_table,
    linear_to_srgb,
    pair_table,
    scene_key,
    tone_curve,
)
from streamer.graph.channel import Channel
from streamer.graph.frames import AccessUnit, Frame


def scene(brightness: float, seed: int = 0) -> np.ndarray:
    """A 96x160 RGB scene (gradients, texture, a small bright lamp) scaled to ``brightness`` (encoded domain)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:96, 0:160].astype(np.float32)
    base = 0.5 + 0.3 * np.sin(cols / 9.0) * np.cos(rows / 7.0) + 0.1 * rng.standard_normal((96, 160))
    image = np.stack([base, 0.9 * base, 0.8 * base], axis=-1) * brightness
    image[10:14, 20:24] = 1.0  # a lamp, as bright as it gets
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def frame(image: np.ndarray, seq: int, fps: float = 25.0, discontinuity: bool = False) -> Frame:
    return Frame(image, seq / fps, 0.0, seq, discontinuity=discontinuity)


def test_a_dark_scene_is_brought_to_the_target_key_and_a_bright_one_left_alone() -> None:
    config = ExposureConfig(enabled=True)
    dark = scene(0.15)
    corrector = ExposureCorrector(config)
    out = corrector.correct(frame(dark, 0))
    assert scene_key(dark) < 0.02
    assert corrector.gain == pytest.approx(min(config.max_gain, config.target_key / scene_key(dark)))
    assert scene_key(out.image) > 5 * scene_key(dark)
    assert out.original is not None and out.original.image is dark  # the raw view shows the camera's frame
    bright = scene(1.3)
    corrector = ExposureCorrector(config)
    assert scene_key(bright) > config.target_key
    unchanged = frame(bright, 0)
    assert corrector.correct(unchanged) is unchanged and corrector.gain == 1.0 and corrector.brightened == 0


def test_the_gain_follows_a_change_of_light_over_adapt_s_and_snaps_at_a_discontinuity() -> None:
    config = ExposureConfig(enabled=True, adapt_s=1.0, max_gain=64)
    corrector = ExposureCorrector(config)
    for seq in range(10):
        corrector.correct(frame(scene(0.2), seq))
    dark_gain = corrector.gain
    gains = []
    for seq in range(10, 135):  # the light goes on: 5 s at 25 fps
        corrector.correct(frame(scene(0.8), seq))
        gains.append(corrector.gain)
    steps = np.abs(np.diff(np.log(gains)))
    assert steps.max() < 0.1 * abs(np.log(dark_gain))  # no jump from one frame to the next
    assert gains[24] > 1.2 * gains[-1]  # still adapting after 1 s
    assert gains[-1] == pytest.approx(max(1.0, config.target_key / scene_key(scene(0.8))), rel=0.02)
    corrector.correct(frame(scene(0.2), 135, discontinuity=True))  # a reconnect to a dark scene: at once
    assert corrector.gain == pytest.approx(dark_gain, rel=1e-3)


def test_the_tone_curve_is_monotonic_and_keeps_highlights_apart() -> None:
    for gain in (1.0, 4.0, 16.0, 64.0):
        table = tone_curve(gain, knee=0.6).astype(int)
        assert np.all(np.diff(table) >= 0)
        assert table[0] == 0
    # a plain gain of 16 clips every level above linear 1/16 (encoded 72) to white; the shoulder keeps the
    # levels around that point apart
    table = tone_curve(16.0, knee=0.6)
    plain = np.round(linear_to_srgb(LINEAR * 16.0) * 255).astype(np.uint8)
    assert np.sum(plain[50:110] == 255) > 30 and np.sum(table[50:110] == 255) == 0
    assert len(np.unique(table[50:110])) > len(np.unique(plain[50:110])) + 10


def test_the_two_byte_lookup_is_the_table_exactly() -> None:
    table = tone_curve(8.0, knee=0.6)
    pairs = pair_table(table)
    rng = np.random.default_rng(1)
    even = rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)
    odd = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)  # an odd number of bytes: one byte at a time
    strided = even[:, ::2]  # not contiguous
    for image in (even, odd, strided):
        assert np.array_equal(apply_table(table, pairs, image), table[image])


def test_config_names_a_bad_field() -> None:
    with pytest.raises(ValidationError, match="max_gain"):
        ExposureConfig(max_gain=0.5)
    with pytest.raises(ValidationError, match="extra"):
        CameraConfig.model_validate({"source": {"type": "demo"}, "exposure": {"enabled": True, "gain": 2}})
    assert not CameraConfig.model_validate({"source": {"type": "demo"}}).exposure.enabled


async def test_the_encode_stage_brightens_every_frame_before_its_taps_and_the_encoder() -> None:
    camera = CameraConfig.model_validate({"source": {"type": "demo"}, "exposure": {"enabled": True}})
    corrector = ExposureCorrector(camera.exposure)
    inbox: Channel[Frame] = Channel("restored", 8)
    units: list[AccessUnit] = []
    stage = EncodeStage(H264Encoder(camera.encoder), inbox, units.append)
    stage.corrections.append(corrector.correct)
    seen: list[Frame] = []
    stage.taps.append(seen.append)
    task = asyncio.create_task(stage.run())
    dark = scene(0.15)
    for seq in range(5):
        inbox.put(frame(dark, seq))
        await inbox.wait_for_space()
    inbox.close()
    await asyncio.wait_for(task, 30)
    stage.close()
    assert len(seen) == 5 and units
    assert all(scene_key(item.image) > 5 * scene_key(dark) for item in seen)
    assert corrector.brightened == 5
