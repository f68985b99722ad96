"""Exposure correction for dark scenes (a camera's ``exposure``, off by default).

A night camera's picture is dark as well as noisy; brightening the camera's own frames amplifies the noise
with the picture, so the gain is applied after restoration, to every frame that goes to the encoder (restored
or not, so a frame the ladder could not restore does not pop dark). One tone curve a frame, the same for the
three channels (greys stay grey; a table looked up on the encoder's worker thread, two bytes at a time):

- the scene's brightness is its log-average luminance in linear light (Reinhard's "key"), measured on every
  8th pixel of every 8th row (a bright lamp in the corner does not darken the rest the way a mean would);
- the gain brings that key to ``target_key`` (0.18: photographic middle grey), never below 1 (a scene that is
  bright enough is left alone) and at most ``max_gain``;
- the gain is smoothed over ``adapt_s`` seconds of the camera's clock (in log steps: a light switched on is
  followed over a second or two, no frame-to-frame pumping), and set at once on the first frame and after a
  discontinuity (a reconnect, a new scene);
- above ``knee`` (linear) the curve rolls off smoothly towards white instead of clipping, so lamps and
  windows keep their shape.
"""

from __future__ import annotations

import math

import numpy as np

from streamer.config import ExposureConfig
from streamer.graph.frames import Frame

SAMPLE_STEP = 8  # every 8th pixel of every 8th row measures the key
LUMA_FLOOR = 1e-3  # linear luminance added before the logarithm: a black pixel is not -inf
LUT_REBUILD_STEP = 0.005  # relative change of gain that rebuilds the table
_PAIRS = np.arange(65536, dtype=np.uint32)  # every pair of bytes, read as a little-endian uint16


def srgb_to_linear(encoded: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear light (IEC 61966-2-1)."""
    return np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] -> sRGB-encoded values in [0, 1]."""
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


LINEAR = srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)  # uint8 -> linear
LUMA_WEIGHTS = np.array([0.2126, 0.7152, 0.0722], np.float32)  # BT.709 luminance of linear RGB


def scene_key(image: np.ndarray) -> float:
    """Log-average linear luminance of an RGB uint8 image, measured on a sparse grid of its pixels."""
    sample = LINEAR[image[::SAMPLE_STEP, ::SAMPLE_STEP]]
    luminance = sample @ LUMA_WEIGHTS
    return float(np.exp(np.mean(np.log(luminance + LUMA_FLOOR))))


def tone_curve(gain: float, knee: float) -> np.ndarray:
    """The 256-entry uint8 table: linear light times ``gain``, rolled off above ``knee`` towards 1 (continuous
    in value and slope at the knee; white only approached: 16 times over the knee is still below 1)."""
    scaled = LINEAR.astype(np.float64) * gain
    room = 1.0 - knee
    over = np.maximum(scaled - knee, 0.0) / room
    curved = np.where(scaled <= knee, scaled, knee + room * over / (1.0 + over))  # Reinhard's shoulder
    return np.round(linear_to_srgb(curved) * 255.0).astype(np.uint8)


def pair_table(table: np.ndarray) -> np.ndarray:
    """``table`` applied to both bytes of every uint16 (little-endian): one lookup for two channel values, half
    the lookups of ``table`` (6.9 vs 14.7 ms a 1080p frame here; 128 KiB, it stays in cache)."""
    return table[_PAIRS & 255].astype(np.uint16) | (table[_PAIRS >> 8].astype(np.uint16) << 8)


def apply_table(table: np.ndarray, pairs: np.ndarray, image: np.ndarray) -> np.ndarray:
    """``table`` looked up for every byte of ``image`` (through ``pairs`` where its size is even)."""
    if image.size % 2 or not image.flags.c_contiguous:
        return table[image]
    return pairs[image.reshape(-1).view(np.uint16)].view(np.uint8).reshape(image.shape)


class ExposureCorrector:
    """Brightens one camera's dark frames (see the module's docstring); ``gain`` is the gain applied last."""

    def __init__(self, config: ExposureConfig) -> None:
        self.config = config
        self.gain = 1.0
        self.frames = 0  # frames seen
        self.brightened = 0  # frames the curve changed (gain over 1)
        self._log_gain: float | None = None  # smoothed, None until the first frame
        self._last_timestamp = 0.0
        self._table_gain = 0.0
        self._table = tone_curve(1.0, config.knee)
        self._pairs = pair_table(self._table)

    def target_gain(self, image: np.ndarray) -> float:
        """The gain that would bring ``image``'s key to the target (within 1 and ``max_gain``)."""
        key = scene_key(image)
        return min(self.config.max_gain, max(1.0, self.config.target_key / key))

    def correct(self, frame: Frame) -> Frame:
        """``frame`` brightened (a new frame; its ``original`` the camera's frame), or ``frame`` itself where the
        gain is 1. Runs on the encoder's worker thread, one frame at a time, in order."""
        self.frames += 1
        target = math.log(self.target_gain(frame.image))
        elapsed = frame.timestamp - self._last_timestamp
        self._last_timestamp = frame.timestamp
        if self._log_gain is None or frame.discontinuity or not 0.0 <= elapsed < 1.0:
            self._log_gain = target
        else:
            self._log_gain += (1.0 - math.exp(-elapsed / self.config.adapt_s)) * (target - self._log_gain)
        self.gain = math.exp(self._log_gain)
        if self.gain < 1.0 + LUT_REBUILD_STEP:
            return frame
        if not self._table_gain or abs(self.gain / self._table_gain - 1.0) >= LUT_REBUILD_STEP:
            self._table, self._table_gain = tone_curve(self.gain, self.config.knee), self.gain
            self._pairs = pair_table(self._table)
        self.brightened += 1
        corrected = Frame(apply_table(self._table, self._pairs, frame.image), frame.timestamp, frame.wallclock, frame.seq,
                          discontinuity=frame.discontinuity, restored=frame.restored,
                          original=frame.original if frame.original is not None else frame, level=frame.level)
        corrected.level_switch = frame.level_switch
        return corrected
