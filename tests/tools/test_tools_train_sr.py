"""tools/train_sr.py on a tiny cache: it trains, keeps checkpoints that tools/export_onnx.py turns into an ONNX
model with ``streamer.scale=2``, and its on-the-fly inputs are the targets made smaller."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from synthetic_media import moving_frames

from tools import export_onnx, train_sr


def write_cache(path: Path, sequences: int = 10, length: int = 6, size: int = 32) -> None:
    targets = np.stack([moving_frames(length, size, size, seed=seed) for seed in range(sequences)])
    noise = np.random.default_rng(0).normal(0, 10, targets.shape)
    degraded = np.clip(targets + noise, 0, 255).astype(np.uint8)
    np.savez(path, targets=targets, degraded=degraded)


def test_sr_training_saves_a_checkpoint_that_exports_with_its_scale(tmp_path: Path) -> None:
    cache = tmp_path / "cache.npz"
    write_cache(cache)
    run = tmp_path / "run"
    train_sr.main(f"--cache {cache} --out {run} --steps 4 --batch 2 --crop 32 --val-sequences 2 --val-every 2 "
                  "--threads 1".split())
    best = torch.load(run / "best.pt", weights_only=False)
    assert best["config"]["scale"] == 2 and best["step"] in (2, 4)
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "start" and events[0]["bicubic_psnr"] > 15 and [e["step"] for e in events[1:]] == [2, 4]
    out = tmp_path / "sr.onnx"
    export_onnx.main(["--checkpoint", str(run / "last.pt"), "--out", str(out), "--check-size", "24", "40"])
    metadata = {entry.key: entry.value for entry in onnx.load(str(out)).metadata_props}
    assert metadata["streamer.scale"] == "2" and metadata["streamer.name"] == "lite-sr2"


def test_coded_substreams_are_built_once_and_trained_on(tmp_path: Path) -> None:
    cache, coded = tmp_path / "cache.npz", tmp_path / "coded.npy"
    write_cache(cache, sequences=4)
    arguments = f"--cache {cache} --out {tmp_path / 'run'} --coded-cache {coded} --val-sequences 1 --threads 1"
    train_sr.main(f"{arguments} --build-coded-cache-only".split())
    small = np.load(coded)
    assert small.shape == (4, 6, 16, 16, 3) and small.dtype == np.uint8
    targets = np.load(cache)["targets"]
    box = targets.reshape(4, 6, 16, 2, 16, 2, 3).mean(axis=(3, 5))
    assert np.abs(small - box).mean() < 25  # the same pictures, smaller, noisy and coded
    train_sr.main(f"{arguments} --steps 2 --batch 4 --crop 32 --val-every 2 --coded-fraction 1".split())
    first = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert first["step"] == 2
    train_sr.main(f"{arguments} --steps 1 --batch 4 --crop 32 --val-every 1 --lr 0 --init {tmp_path / 'run' / 'last.pt'}"
                  .split())  # a fine-tune from the run's weights (at learning rate 0: they stay)
    second = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert all(torch.equal(second["model"][key], value) for key, value in first["model"].items())
    assert np.array_equal(np.load(coded), small)  # built once: the second run read it


@pytest.mark.parametrize("kernel", train_sr.KERNELS)
def test_inputs_are_the_windows_made_half_as_large(kernel: str) -> None:
    frames = torch.from_numpy(moving_frames(1, 32, 48, seed=3)).permute(0, 3, 1, 2).float() / 255
    small = train_sr.downscale(frames, kernel)
    assert small.shape == (1, 3, 16, 24)
    assert torch.equal(small, torch.round(small * 255) / 255)  # 8-bit levels, as a camera's frames
    box = frames.reshape(1, 3, 16, 2, 24, 2).mean(dim=(3, 5))
    assert float((small - box).abs().mean()) < 0.05  # every kernel: the same picture, smaller


def test_a_cache_too_small_to_hold_back_validation_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache.npz"
    write_cache(cache, sequences=2)
    with pytest.raises(SystemExit, match="too few"):
        train_sr.main(f"--cache {cache} --out {tmp_path / 'run'} --steps 1 --val-sequences 2".split())


def test_a_coded_window_lines_up_with_its_target() -> None:
    """Crops, flips, transposes and time reversal move a coded window and its full-size target together."""
    rng = np.random.default_rng(0)
    targets = np.stack([moving_frames(6, 32, 32, seed=seed) for seed in range(3)])
    smaller = targets.reshape(3, 6, 16, 2, 16, 2, 3).mean(axis=(3, 5)).round().astype(np.uint8)
    small, labels = train_sr.sample_batch(targets, targets, 3, 5, 2, 16, 16, 0.0, 0.0, rng, smaller, 1.0)
    assert small.shape == (16, 15, 8, 8) and labels.shape == (16, 3, 16, 16)
    expected = torch.nn.functional.avg_pool2d(labels, 2)
    assert float((small[:, 6:9] - expected).abs().max()) < 1.5 / 255
