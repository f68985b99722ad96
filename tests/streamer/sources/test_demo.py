"""The demo camera, run offline (no pacing) for minutes of stream time: it must not decay."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.config import DemoSourceConfig
from streamer.exposure import scene_key
from streamer.sources.demo import DemoFrames, frame_rate
from streamer.timecode import STRIP_HEIGHT
from tests.media import psnr

# 480x272 (not the default 640x360) to save time; the default camera otherwise (25 fps, sigma 18, 1200 kbit/s
# VBV cap). Measured over these 4,500 frames: every delivered frame >= 27.4 dB PSNR against the clean scene
# (mean 28.8), every keyframe >= 36 % of the first (48 kB, sent with a full VBV buffer; later ones 17-23 kB).
# The camera with a 1/1000 time base and no frame rate (the bug) fell to 11.1 dB (flat grey blocks) and its
# keyframes to 431 bytes (0.9 % of the first); at 640x360 the same: 7.8 dB, 743 bytes of 85 kB.
PSNR_FLOOR_DB = 25.0
KEYFRAME_FLOOR = 0.2
FRAMES = 4500  # 3 minutes at 25 fps


@pytest.mark.slow
def test_demo_camera_holds_its_quality_for_three_minutes_of_stream_time() -> None:
    frames = DemoFrames(DemoSourceConfig(width=480, height=272))
    worst = (np.inf, -1)
    keyframes: list[tuple[int, int]] = []
    for index in range(FRAMES):
        frame = frames.next(barcode_ms=1_790_000_000_000 + index * 40)
        assert frame.index == index and frame.timestamp == pytest.approx(index / 25)
        quality = psnr(frame.image, frame.clean)
        worst = min(worst, (quality, index))
        if frame.keyframe:
            keyframes.append((index, sum(len(packet) for packet in frame.packets)))
    assert worst[0] >= PSNR_FLOOR_DB, f"frame {worst[1]} is {worst[0]:.1f} dB from the clean scene"
    assert len(keyframes) == FRAMES // 50, "a keyframe every 2 s"
    first = keyframes[0][1]
    smallest = min(keyframes[1:], key=lambda item: item[1])
    assert smallest[1] >= KEYFRAME_FLOOR * first, f"keyframe at frame {smallest[0]}: {smallest[1]} B, first {first} B"


def test_frame_rate_is_exact_for_codecs() -> None:
    assert frame_rate(25.0) == 25
    assert frame_rate(29.97) == pytest.approx(29.97)
    assert frame_rate(30000 / 1001).denominator == 1001


def test_a_night_demo_scene_is_darker_in_linear_light_and_keeps_its_barcode() -> None:
    day = DemoFrames(DemoSourceConfig(timestamp_strip=True)).next(barcode_ms=1234)  # 640x360
    night = DemoFrames(DemoSourceConfig(brightness=0.05, timestamp_strip=True)).next(barcode_ms=1234)
    above = slice(0, 360 - STRIP_HEIGHT)  # the scene, above the barcode
    assert scene_key(night.clean[above]) == pytest.approx(0.05 * scene_key(day.clean[above]), rel=0.35)
    barcode = slice(360 - STRIP_HEIGHT, 360)  # drawn after the scene is darkened: still black and white
    assert np.array_equal(night.clean[barcode], day.clean[barcode])
