"""A tiny recurrent training run: chains of outputs through the state, checkpoints, resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from synthetic_media import moving_frames, write_clip

from engines.arch import ArchConfig, build_model, preset
from tools import train_recurrent


def test_tiny_recurrent_train_grows_a_window_model_and_resumes(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", moving_frames(20, 48, 64, seed=1))
    window_model = build_model(preset("tiny"))
    torch.save({"config": window_model.config.to_dict(), "model": window_model.state_dict()}, tmp_path / "w.pt")
    common = [
        "--clips", str(clip), "--cache", str(tmp_path / "cache.npz"), "--out", str(tmp_path / "run"),
        "--preset", "tiny", "--cache-sequences", "8", "--sequence-length", "7", "--sequence-size", "32",
        "--crop", "32", "--batch", "2", "--val-sequences", "2", "--val-every", "2", "--clip-size", "64x48",
        "--unroll", "3", "--init", str(tmp_path / "w.pt"), "--still-fraction", "0.5",
    ]  # fmt: skip
    train_recurrent.main([*common, "--steps", "2"])
    first = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert first["step"] == 2 and first["config"]["recurrent"] == 1
    assert set(first["val"]) == {f"{name}{part}" for name in ("sigma25", "mixed", "still25") for part in ("", "_first")}
    assert float(first["model"]["state_fusion.weight"].abs().max()) > 0  # the state paths learned from zero
    train_recurrent.main([*common, "--steps", "4"])
    second = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert second["step"] == 4
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [0, 2, 4]
    # --freeze-window-model: only the recurrent parts learn, the window model's weights stay exactly as given;
    # --gate-context: the gate's frame-wide cue is one of them (it learns once the state's fusion and the gate's
    # last conv have left zero, from the third step)
    frozen = [arg if arg != str(tmp_path / "run") else str(tmp_path / "frozen") for arg in common]
    train_recurrent.main([*frozen, "--steps", "3", "--freeze-window-model", "--lr", "1e-2", "--gate-context"])
    saved = torch.load(tmp_path / "frozen" / "last.pt", weights_only=False)
    trained = saved["model"]
    for key, value in window_model.state_dict().items():
        assert torch.equal(trained[key], value), key
    assert float(trained["gate.out.weight"].abs().max()) > 0
    assert saved["config"]["gate_context"] == 1 and float(trained["gate.context.weight"].abs().max()) > 0


def test_unrolled_chain_feeds_each_output_to_the_next_step() -> None:
    torch.manual_seed(0)
    model = build_model(preset("tiny", recurrent=True)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.1)
    noisy = torch.rand(1, 7, 3, 16, 16)
    with torch.no_grad():
        chain = train_recurrent.unroll(model, noisy, 3)
        first, state = model.step(noisy[:, 0:5].reshape(1, 15, 16, 16))
        second, _ = model.step(noisy[:, 1:6].reshape(1, 15, 16, 16), state)
        fresh = model(noisy[:, 1:6].reshape(1, 15, 16, 16))
    assert torch.equal(chain[0], first) and torch.equal(chain[1], second)
    assert len(chain) == 3
    assert not np.array_equal(chain[1].numpy(), fresh.numpy())

def test_still_scene_holds_the_first_frame_outside_one_moving_rectangle() -> None:
    rng = np.random.default_rng(0)
    moving = rng.integers(0, 256, (6, 40, 40, 3), dtype=np.uint8)
    for _ in range(20):
        still = train_recurrent.still_scene(moving, rng)
        changing = (still != still[:1]).any(axis=(0, 3))
        assert still.shape == moving.shape
        assert np.array_equal(still[0], moving[0])
        if changing.any():
            rows, cols = np.nonzero(changing)
            box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
            assert np.array_equal(still[:, box[0], box[1]], moving[:, box[0], box[1]])
            assert changing.mean() < 0.5


def test_coded_still_scene_keeps_its_noise_still_where_noise_alone_changes_every_frame() -> None:
    rng = np.random.default_rng(1)
    scene = np.repeat(np.tile(np.linspace(40, 200, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))[None], 8, axis=0)
    noisy = np.clip(scene + rng.normal(0, 8, scene.shape), 0, 255).astype(np.uint8)
    coded = train_recurrent.codec_roundtrip(noisy, rng)
    assert coded.shape == noisy.shape and coded.dtype == np.uint8

    def change(run: np.ndarray) -> float:
        return float(np.abs(np.diff(run[1:].astype(np.float64), axis=0)).mean())

    # x264 codes moderate noise once and then mostly skips: later frames barely change, the raw noise does fully
    assert change(coded) < 0.25 * change(noisy)
    # in training chains (sensor noise drawn up to sigma 50, then the codec) the coded runs change far less
    runs = {
        codec: train_recurrent.sample_chains(scene[None], noisy[None], 8, 8, 32, 0.0, rng, None, 1.0, codec)
        for codec in (0.0, 1.0)
    }
    assert all(clean.shape == degraded.shape == (8, 8, 32, 32, 3) for clean, degraded in runs.values())
    assert np.mean([change(run) for run in runs[1.0][1]]) < 0.5 * np.mean([change(run) for run in runs[0.0][1]])


def test_qat_recurrent_run_saves_plain_weights_and_ranges_the_quantiser_uses(tmp_path: Path) -> None:
    from tools import export_onnx, quantize

    clip = write_clip(tmp_path / "clip.mp4", moving_frames(20, 48, 64, seed=2))
    common = [
        "--clips", str(clip), "--cache", str(tmp_path / "cache.npz"), "--out", str(tmp_path / "run"),
        "--preset", "tiny", "--cache-sequences", "8", "--sequence-length", "7", "--sequence-size", "32",
        "--crop", "32", "--batch", "2", "--val-sequences", "2", "--val-every", "2", "--clip-size", "64x48",
        "--unroll", "3", "--qat", "--qat-residual-range", "0.4", "--qat-calibration-batches", "2",
    ]  # fmt: skip
    train_recurrent.main([*common, "--steps", "2"])
    first = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    body_convs = sum(1 for key in first["model"] if key.startswith("body.") and key.endswith(".weight"))
    # every body conv's input after the first, and the residual fixed at [-0.4, 0.4]
    assert len(first["qat_ranges"]) == body_convs and first["qat_ranges"][-1] == {"low": -0.4, "high": 0.4}
    assert not any("parametrizations" in key for key in first["model"])
    assert all(entry["high"] > entry["low"] for entry in first["qat_ranges"])
    train_recurrent.main([*common, "--steps", "4"])  # resumes with the saved ranges
    second = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert second["step"] == 4 and second["qat_ranges"] == first["qat_ranges"]
    export_onnx.main(["--checkpoint", str(tmp_path / "run" / "last.pt"), "--out", str(tmp_path / "rec.onnx")])
    quantize.main(["--model", str(tmp_path / "rec.onnx"), "--clips", str(clip), "--windows", "2", "--size", "64x48",
                   "--threads", "1", "--ranges-from", str(tmp_path / "run" / "last.pt"), "--residual-range", "0.4"])
    assert (tmp_path / "rec.int8.onnx").exists()


def test_recurrent_run_grows_a_recurrent_checkpoint_wider_and_deeper(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", moving_frames(20, 48, 64, seed=3))
    torch.manual_seed(0)
    narrow = build_model(preset("tiny", recurrent=True))
    with torch.no_grad():
        for parameter in narrow.parameters():
            parameter.normal_(0, 0.05)
    torch.save({"config": narrow.config.to_dict(), "model": narrow.state_dict()}, tmp_path / "narrow.pt")
    train_recurrent.main([
        "--clips", str(clip), "--cache", str(tmp_path / "cache.npz"), "--out", str(tmp_path / "run"),
        "--preset", "tiny", "--cache-sequences", "8", "--sequence-length", "7", "--sequence-size", "32",
        "--crop", "32", "--batch", "2", "--val-sequences", "2", "--val-every", "1", "--clip-size", "64x48",
        "--unroll", "3", "--init", str(tmp_path / "narrow.pt"), "--width", "12", "--depth", "2", "--steps", "1",
        "--lr", "1e-9",
    ])  # fmt: skip
    grown = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert (grown["config"]["width"], grown["config"]["depth"]) == (12, 2)
    assert grown["model"]["state_fusion.weight"].shape[0] == 12
    # the grown model (one step at a negligible rate) computes what the narrow one did, state included
    wide = build_model(ArchConfig.from_dict(grown["config"])).eval()
    wide.load_state_dict(grown["model"])
    frames, state = torch.rand(1, 15, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        difference = (wide.step(frames, state)[0] - narrow.eval().step(frames, state)[0]).abs().max()
    assert float(difference) < 0.5 / 255
