"""Training data for tools/train.py and tools/train_recurrent.py: the clips and still sets they read, and the
caches of short (clean, degraded) sequences built from them once (x264 in the loop, so building is the slow part)
and sampled by every run after. numpy + PyAV only, so tools that just list clips do not import torch."""

from __future__ import annotations

import argparse
import dataclasses
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tools import degrade

CLIP_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".ts")


def list_clips(paths: list[Path]) -> list[Path]:
    clips: list[Path] = []
    for path in paths:
        if degrade.is_image_sequence(path) or not path.is_dir():
            clips.append(path)
        else:
            clips += sorted(
                p for p in path.iterdir() if p.suffix.lower() in CLIP_SUFFIXES or degrade.is_image_sequence(p)
            )
    return clips


@dataclasses.dataclass(frozen=True)
class CacheProfile:
    """Degradation mix of one cache: share of each kind, x264 CRF ranges (inclusive) and the noise ceiling."""

    shares: dict[str, float]
    codec_crf: tuple[int, int]
    noise_codec_crf: tuple[int, int]
    max_sigma: float

    def describe(self) -> str:
        """One line for --help, e.g. "60% H.264 only at CRF 26-42, Gaussian sigma <= 20"."""
        low, high = self.codec_crf
        codec = self.shares["codec"]
        return f"{codec:.0%} H.264 only at CRF {low}-{high}, Gaussian sigma <= {self.max_sigma:g}"


CACHE_PROFILES: dict[str, CacheProfile] = {
    "mixed": CacheProfile(
        {"codec": 0.3, "noise_codec": 0.35, "lowlight": 0.2, "noise": 0.15}, (18, 40), (18, 35), 45.0
    ),
    # heavy H.264 (CRF 26-42) with light noise
    "codec": CacheProfile(
        {"codec": 0.6, "noise_codec": 0.25, "lowlight": 0.15, "noise": 0.0}, (26, 42), (26, 35), 20.0
    ),
    # low-bitrate cameras: mostly clean content at CRF 32-42, the rest lightly noisy before the encoder
    "lowbitrate": CacheProfile(
        {"codec": 0.75, "noise_codec": 0.15, "lowlight": 0.1, "noise": 0.0}, (32, 42), (30, 38), 12.0
    ),
    # every kind at once, noise up to sigma 45 before the encoder too (`lite` on fresh caches, model card)
    "broad": CacheProfile(
        {"codec": 0.45, "noise_codec": 0.3, "lowlight": 0.1, "noise": 0.15}, (26, 42), (20, 38), 45.0
    ),
}


def degrade_for_cache(
    clean: np.ndarray, rng: np.random.Generator, profile: str = "mixed"
) -> tuple[np.ndarray, np.ndarray]:
    """Return (target, degraded) for one sequence: codec only, noise then codec, low light, or noise only."""
    spec = CACHE_PROFILES[profile]
    kind = rng.choice(list(spec.shares), p=list(spec.shares.values()))
    target = clean
    if kind == "lowlight":
        target = degrade.darken(clean, rng.uniform(0.12, 0.6), rng.uniform(1.0, 1.6))
    noisy = target
    if kind in ("noise_codec", "noise", "lowlight"):
        if rng.random() < 0.5:
            noisy = degrade.add_gaussian_noise(target, rng.uniform(2, spec.max_sigma), rng)
        else:
            noisy = degrade.add_poisson_gaussian_noise(target, rng.uniform(0, 0.02), rng.uniform(0, 12), rng)
    if kind == "noise":
        return target, noisy
    low, high = spec.codec_crf if kind == "codec" else spec.noise_codec_crf
    crf = int(rng.integers(low, high + 1))
    preset_name = str(rng.choice(["veryfast", "medium"]))
    bframes = 0 if rng.random() < 0.5 else None
    return target, degrade.x264_roundtrip(noisy, crf, preset_name, bframes)


def build_cache(
    clips: list[Path],
    stills: list[Path],
    count: int,
    length: int,
    size: int,
    train_fraction: float,
    seed: int,
    clip_size: tuple[int, int] = (640, 360),
    profile: str = "mixed",
    clip_downscale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Build ``count`` sequences [length, size, size, 3] (half from clips, half from stills)."""
    rng = np.random.default_rng(seed)
    short = [clip for clip in clips if _training_frames(clip, train_fraction) < length]
    for clip in short:
        tqdm.write(f"skipped {clip.name}: fewer than {length} frames to train on")
    clips = [clip for clip in clips if clip not in short]
    targets = np.zeros((count, length, size, size, 3), np.uint8)
    degraded = np.zeros_like(targets)
    sources: list[np.ndarray] = []
    per_clip = (count // 2) // max(1, len(clips)) if stills else count // max(1, len(clips))
    progress = tqdm(total=count, desc="cache")
    index = 0
    for clip in clips:
        (start, stop), _ = degrade.split_bounds(degrade.count_frames(clip), train_fraction)
        frames = degrade.read_clip(
            clip, start, stop, clean_size(degrade.native_size(clip), clip_size, clip_downscale)
        )
        for _ in range(per_clip):
            first = int(rng.integers(0, len(frames) - length + 1))
            top = int(rng.integers(0, frames.shape[1] - size + 1))
            left = int(rng.integers(0, frames.shape[2] - size + 1))
            sequence = np.ascontiguousarray(
                frames[first : first + length, top : top + size, left : left + size]
            )
            targets[index], degraded[index] = degrade_for_cache(sequence, rng, profile)
            index += 1
            progress.update(1)
    sources = [degrade.load_still(path) for path in stills]
    while index < count:
        image = sources[int(rng.integers(0, len(sources)))]
        sequence = degrade.pseudo_video(image, length, size, rng)
        targets[index], degraded[index] = degrade_for_cache(sequence, rng, profile)
        index += 1
        progress.update(1)
    progress.close()
    order = rng.permutation(count)
    return targets[order], degraded[order]


def _training_frames(clip: Path, train_fraction: float) -> int:
    (start, stop), _ = degrade.split_bounds(degrade.count_frames(clip), train_fraction)
    return stop - start


def clean_size(native: tuple[int, int], largest: tuple[int, int], downscale: float) -> tuple[int, int]:
    """Size (W, H, even) a training clip is decoded at: at most ``largest`` and at least ``downscale`` times
    smaller than its native size. Shrinking hides the source's own compression (a 2x downscale averages most
    H.264 blocking away), so the clean targets are clean and the model does not learn to keep artifacts."""
    width, height = native
    factor = max(downscale, width / largest[0], height / largest[1], 1.0)
    return max(2, int(width / factor) // 2 * 2), max(2, int(height / factor) // 2 * 2)


def load_or_build_cache(
    args: argparse.Namespace, path: Path, profile: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if path.exists():
        with np.load(path) as stored:
            return stored["targets"], stored["degraded"]
    clips = list_clips(args.clips)
    stills = degrade.list_stills(args.stills)
    if not clips and not stills:
        raise SystemExit("no training data: pass --clips and/or --stills")
    width, height = args.clip_size
    targets, degraded = build_cache(
        clips,
        stills,
        args.cache_sequences,
        args.sequence_length,
        args.sequence_size,
        args.train_fraction,
        seed,
        (width, height),
        profile,
        args.clip_downscale,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, targets=targets, degraded=degraded)
    return targets, degraded


def cache_shape(path: Path) -> tuple[int, ...]:
    """Shape of a cache's ``targets`` from its .npy header inside the .npz, without reading the frames."""
    with zipfile.ZipFile(path) as archive, archive.open("targets.npy") as stored:
        version = np.lib.format.read_magic(stored)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = read_header(stored)
    return tuple(shape)


def load_caches(
    args: argparse.Namespace,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Return (train targets, train degraded, val targets, val degraded, per-sequence sampling weights).

    Several caches are copied one at a time into arrays made for all of them, so loading needs their total size
    plus one cache, not twice the total (five 1.9 GB caches fit a 24 GB machine)."""
    if not args.cache:
        raise SystemExit("no cache given")
    profiles = [args.cache_profile[min(index, len(args.cache_profile) - 1)] for index in range(len(args.cache))]
    if len(args.cache) == 1:  # nothing to join: the cache's own arrays
        targets, degraded = load_or_build_cache(args, args.cache[0], profiles[0], args.seed)
        val_count = min(args.val_sequences, len(targets) // 4)  # validation: the first sequences
        weights = sequence_weights([len(targets) - val_count], args.cache_weights)
        val_parts = (targets[:val_count].copy(), degraded[:val_count].copy())
        return targets[val_count:], degraded[val_count:], *val_parts, weights
    for index, path in enumerate(args.cache):  # build what is missing before reading any
        if not path.exists():
            load_or_build_cache(args, path, profiles[index], args.seed + index)
    shapes = [cache_shape(path) for path in args.cache]
    if len({shape[1:] for shape in shapes}) > 1:
        listed = ", ".join(
            f"{path.name}: {shape[1]} frames of {shape[2]}x{shape[3]}"
            for path, shape in zip(args.cache, shapes, strict=True)
        )
        raise SystemExit(f"--cache files hold sequences of different shapes ({listed}); build them alike")
    counts = [shape[0] for shape in shapes]
    val_count = min(args.val_sequences, counts[0] // 4)  # validation: the first cache's first sequences
    counts[0] -= val_count
    sequence_shape = shapes[0][1:]
    train_targets = np.empty((sum(counts), *sequence_shape), np.uint8)
    train_degraded = np.empty_like(train_targets)
    filled = 0
    for index, path in enumerate(args.cache):
        targets, degraded = load_or_build_cache(args, path, profiles[index], args.seed + index)
        if index == 0:
            val_parts = (targets[:val_count].copy(), degraded[:val_count].copy())
            targets, degraded = targets[val_count:], degraded[val_count:]
        train_targets[filled : filled + len(targets)] = targets
        train_degraded[filled : filled + len(targets)] = degraded
        filled += len(targets)
        del targets, degraded
    weights = sequence_weights(counts, args.cache_weights)
    return train_targets, train_degraded, *val_parts, weights


def sequence_weights(counts: list[int], cache_weights: list[float] | None) -> np.ndarray | None:
    """Per-sequence sampling probabilities giving cache i a share proportional to cache_weights[i]."""
    if not cache_weights:
        return None
    if len(cache_weights) != len(counts) or min(cache_weights) < 0 or sum(cache_weights) <= 0:
        raise SystemExit("--cache-weights needs one non-negative weight per --cache, not all zero")
    total = sum(cache_weights)
    return np.concatenate(
        [np.full(count, weight / total / count) for count, weight in zip(counts, cache_weights, strict=True)]
    )
