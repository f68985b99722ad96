"""Deterministic camera-like frames for the GPU check: clean scene + sensor noise, with or without PyAV.

The demo camera's renderer (``streamer.sources.demo``: landscape, panning camera, a car, Poisson-Gaussian
noise) is used when it imports; that module imports PyAV, which a bare GPU machine may lack, so a small
stand-in scene (smooth colour fields, texture, edges, a moving block) takes over there and the report says
which one made the frames.
"""

from __future__ import annotations

import math

import numpy as np


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (inf when identical)."""
    error = float(np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return math.inf if error == 0 else 10 * math.log10(255.0**2 / error)


class _FallbackScene:
    def __init__(self, width: int, height: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.width, self.height = width, height
        rows, cols = np.mgrid[0 : int(height * 1.25), 0 : int(width * 1.25)].astype(np.float32)
        phases = rng.uniform(0, 2 * np.pi, (3, 3))
        planes = [
            128 + 55 * np.sin(cols / (37 + 9 * c) + phases[c, 0]) * np.cos(rows / (29 + 7 * c) + phases[c, 1])
            + 25 * np.sin((cols + 2 * rows) / 6.5 + phases[c, 2])
            for c in range(3)
        ]
        world = np.stack(planes, axis=-1)
        for _ in range(12):  # flat blocks with sharp edges, as buildings and signs give
            h, w = int(rng.integers(height // 12, height // 4)), int(rng.integers(width // 12, width // 4))
            y, x = int(rng.integers(0, world.shape[0] - h)), int(rng.integers(0, world.shape[1] - w))
            world[y : y + h, x : x + w] = rng.uniform(30, 225, 3)
        self.world = np.clip(world, 0, 255).astype(np.uint8)

    def frame(self, index: int, fps: float) -> np.ndarray:
        t = index / fps
        span_y, span_x = self.world.shape[0] - self.height, self.world.shape[1] - self.width
        y = int((0.5 + 0.5 * math.sin(t * 0.3)) * span_y)
        x = int((0.5 + 0.5 * math.sin(t * 0.4 + 1.0)) * span_x)
        image = self.world[y : y + self.height, x : x + self.width].copy()
        size = max(self.height // 8, 4)
        left = int(t * self.width / 5) % max(self.width - size, 1)
        image[self.height // 2 : self.height // 2 + size, left : left + size] = (200, 30, 30)
        return image


class _FallbackNoise:
    def __init__(self, sigma: float, seed: int) -> None:
        self.sigma = sigma
        self._rng = np.random.default_rng(seed + 1)

    def apply(self, image: np.ndarray) -> np.ndarray:
        signal = image.astype(np.float32)
        std = self.sigma * np.sqrt(0.4 + 0.6 * signal / 255.0)
        return np.clip(signal + std * self._rng.standard_normal(image.shape, dtype=np.float32), 0, 255).astype(np.uint8)


class SceneFrames:
    """Clean and noisy frames of a moving scene (the demo camera's when PyAV is there)."""

    def __init__(self, width: int, height: int, sigma: float = 18.0, seed: int = 1) -> None:
        try:
            from streamer.sources.demo import DemoScene, SensorNoise

            self.scene: DemoScene | _FallbackScene = DemoScene(width, height, seed)
            self.noise: SensorNoise | _FallbackNoise = SensorNoise(width, height, sigma, seed)
            self.kind = "demo camera renderer (streamer.sources.demo)"
        except ImportError as error:
            self.scene = _FallbackScene(width, height, seed)
            self.noise = _FallbackNoise(sigma, seed)
            self.kind = f"stand-in scene ({error})"
        self.fps = 25.0

    def clean(self, index: int) -> np.ndarray:
        return self.scene.frame(index, self.fps)

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        clean = self.clean(index)
        return clean, self.noise.apply(clean)
