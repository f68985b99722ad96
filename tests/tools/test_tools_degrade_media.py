"""Clip reading (videos and image sequences) and the x264 round trip's colour handling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic_media import moving_frames, write_clip, write_sequence

from tools import degrade
from tools.eval import DEGRADATIONS, degradation_seed, degrade_clip, psnr
from tools.training_cache import list_clips


def test_an_image_sequence_folder_reads_as_one_clip(tmp_path: Path) -> None:
    frames = moving_frames(5, 32, 48, seed=1)
    sequence = write_sequence(tmp_path / "clips" / "seq", frames)
    (sequence / "notes.txt").write_text("not a frame")
    video = write_clip(tmp_path / "clips" / "video.mp4", moving_frames(4, 32, 48, seed=2))
    assert list_clips([tmp_path / "clips"]) == [sequence, video]
    assert degrade.count_frames(sequence) == 5
    assert degrade.native_size(sequence) == (48, 32)
    read = degrade.read_clip(sequence, 1, 4, (48, 32))
    np.testing.assert_array_equal(read, frames[1:4])  # PNG is lossless, same size: exact
    assert degrade.read_clip(sequence, 0, 5, (24, 16), step=2).shape == (3, 16, 24, 3)


@pytest.mark.parametrize("level", [30, 128, 200])
def test_x264_round_trip_keeps_a_flat_grey_level(level: int) -> None:
    """A limited/full range mix-up between the RGB->YUV conversion, the stream and the decoder's YUV->RGB
    would shift a flat grey by up to ~16 levels (e.g. 200 -> 188); the round trip must keep it within 2."""
    frames = np.full((3, 64, 64, 3), level, np.uint8)
    out = degrade.x264_roundtrip(frames, 37)
    assert np.abs(out.astype(int) - level).max() <= 2


def test_yuv_conversion_is_bt601_tv_range_and_tagged_so() -> None:
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, :8] = 128
    image[:, 8:] = (255, 0, 0)
    frame = degrade.rgb_to_yuv420p(image)
    luma = frame.to_ndarray()[:16]
    assert luma[0, 0] == 126  # 16 + 219 * 128 / 255: limited range (full range would give 128)
    assert luma[0, 12] == 81  # BT.601 red: 16 + 219 * 0.299 (BT.709 would give 63)
    assert (frame.colorspace, frame.color_range) == (degrade.VUI_SMPTE170M, 1)  # smpte170m, MPEG range
    back = degrade.yuv_to_rgb(frame)
    assert np.abs(back.astype(int) - image).max() <= 3


def test_noise_crf30_is_noise_then_a_crf30_encode_and_keeps_old_seeds() -> None:
    assert DEGRADATIONS[:4] == ("sigma15", "sigma25", "crf37", "lowlight")  # old noise unchanged
    assert DEGRADATIONS[4] == "noise_crf30"
    seed = degradation_seed("noise_crf30", ["noise_crf30"], 0)
    assert seed == degradation_seed("noise_crf30", list(DEGRADATIONS), 0) == 4000
    clean = moving_frames(3, 64, 128, seed=3)  # x264 is not repeatable on some tiny widths (96), even on one thread
    reference, degraded = degrade_clip("noise_crf30", clean, seed)
    assert reference is clean and degraded.shape == clean.shape
    noisy_only = degrade_clip("sigma10", clean, seed)[1]
    encoded_only = degrade.x264_roundtrip(clean, 30)
    # a degraded picture, neither the noisy frames nor the clean frames' encode alone
    assert 15.0 < psnr(degraded, clean) < 36.0
    assert psnr(degraded, noisy_only) < 40.0 and psnr(degraded, encoded_only) < 40.0
    for _ in range(3):  # repeatable bit for bit (x264's frame threads are not, on small frames)
        np.testing.assert_array_equal(degrade_clip("noise_crf30", clean, seed)[1], degraded)
