"""The controlled experiments of tools/qp_probe.py (cues, clean targets, designs from scratch) and the QP maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_media import moving_frames, write_clip

from engines.arch import ArchConfig, build_model, preset
from tools import degrade, qp_probe
from tools import eval as evaluation


def test_decoder_qp_maps_cover_every_macroblock_and_grow_with_crf() -> None:
    frames = moving_frames(6, 40, 72, seed=3)  # 40 rows: a partial third macroblock row
    _, fine = degrade.x264_roundtrip_with_qp(frames, 20, threads=1)
    coarse_frames, coarse = degrade.x264_roundtrip_with_qp(frames, 42, threads=1)
    assert fine.shape == coarse.shape == (6, 3, 5)
    assert fine.min() > 0 and coarse.max() <= 51
    assert coarse.mean() > fine.mean() + 10
    assert coarse_frames.shape == frames.shape and coarse_frames.dtype == np.uint8


def test_degradations_are_eval_py_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """degrade_clip_with_qp (what the probe evaluates on): the same frames as eval.degrade_clip and the QP of the
    coded ones (x264 replaced by a stand-in: on frames this small it is not repeatable bit for bit)."""

    def stand_in(frames: np.ndarray, crf: int, *_args: object, **_kwargs: object) -> tuple[np.ndarray, np.ndarray]:
        grid = (len(frames), (frames.shape[1] + 15) // 16, (frames.shape[2] + 15) // 16)
        return frames // 2 + crf, np.full(grid, crf, np.float32)

    monkeypatch.setattr(degrade, "x264_roundtrip_with_qp", stand_in)
    clean = moving_frames(4, 48, 64, seed=5)
    for name, crf in (("crf37", 37), ("noise_crf30", 30), ("sigma25", 0), ("lowlight", 30)):
        reference, degraded, qp = evaluation.degrade_clip_with_qp(name, clean, 17)
        expected_reference, expected = evaluation.degrade_clip(name, clean, 17)
        assert np.array_equal(reference, expected_reference) and np.array_equal(degraded, expected)
        assert qp.shape == (4, 3, 4) and np.all(qp == crf)


def lite_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    torch.save({"model": build_model(preset("lite")).state_dict()}, path)
    return path


def test_qp_model_starts_as_the_model_it_wraps_and_the_cue_reaches_the_output(tmp_path: Path) -> None:
    init = lite_checkpoint(tmp_path / "lite.pt")
    frames = torch.rand(1, 15, 32, 48)
    qp = torch.rand(1, 5, 8, 12)
    for every_layer in (False, True):
        model = qp_probe.load_model(init, None, every_layer).eval()
        with torch.no_grad():
            assert torch.allclose(model(frames, qp), model.base(frames), atol=1e-6)
            for conv in model.qp_inputs:
                conv.weight.normal_(0, 0.5)  # type: ignore[operator]
            assert not torch.allclose(model(frames, qp), model(frames, torch.zeros_like(qp)), atol=1e-4)
    assert len(qp_probe.load_model(init, None, True).qp_inputs) == 5  # the first layer and four hidden ones


def test_build_train_and_eval_run_end_to_end_on_tiny_media(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", moving_frames(12, 256, 288, seed=9))
    cache = tmp_path / "cache.npz"
    qp_probe.main(["build", "--clips", str(clip), "--count", "4", "--out", str(cache)])
    with np.load(cache) as stored:
        assert stored["targets"].shape == stored["degraded"].shape == (4, 8, 128, 128, 3)
        assert stored["qp"].shape == (4, 8, 8, 8)
    init = lite_checkpoint(tmp_path / "lite.pt")
    models = ""
    for cue in ("qp", "error", "estimate"):
        weights = tmp_path / f"{cue}.pt"
        train = f"train --cache {cache} --init {init} --arm cue --cue {cue} --steps 3 --batch 2 --crop 64 --threads 1"
        qp_probe.main([*train.split(), "--out", str(weights)])
        assert torch.load(weights, weights_only=False)["cue"] == cue
        models += f" --model {cue}={weights}"
    scratch = tmp_path / "scratch.pt"  # lite's design at x2 space-to-depth, untrained: the architecture arm
    qp_probe.main(
        [*f"train --cache {cache} --init {init} --arm blind --from-scratch --unshuffle 2 --width 8".split(),
         *"--steps 2 --batch 2 --crop 64 --threads 1 --out".split(), str(scratch)]
    )
    assert torch.load(scratch, weights_only=False)["arch"]["unshuffle"] == 2
    resumed = tmp_path / "resumed.pt"  # trained on from that checkpoint: same design, weights moved on
    qp_probe.main(
        [*f"train --cache {cache} --init {init} --arm blind --resume {scratch}".split(),
         *"--steps 2 --batch 2 --crop 64 --threads 1 --out".split(), str(resumed)]
    )
    before, after = (torch.load(path, weights_only=False) for path in (scratch, resumed))
    assert after["arch"] == before["arch"]
    assert not torch.equal(after["model"]["base.body.0.weight"], before["model"]["base.body.0.weight"])
    models += f" --model scratch={scratch}"
    out = tmp_path / "eval.json"
    evaluate = (
        f"eval --init {init} --model start={models} --clips {clip} --degradations crf37 sigma25"
        f" --frames 6 --threads 1 --out {out}"
    )
    results = qp_probe.evaluate(qp_probe.parse_args(evaluate.split()))
    assert set(results) == {"crf37/clip.mp4", "crf37/mean", "sigma25/clip.mp4", "sigma25/mean"}
    assert set(results["crf37/mean"]) == {"start", "qp", "error", "estimate", "scratch"}
    with pytest.raises(SystemExit):  # an architecture arm compares designs, not cues
        qp_probe.parse_args(f"train --cache {cache} --init {init} --arm cue --from-scratch --out x.pt".split())
    with pytest.raises(SystemExit):  # a resumed run keeps its checkpoint's design
        qp_probe.parse_args(
            f"train --cache {cache} --init {init} --arm blind --from-scratch --resume r.pt --out x.pt".split()
        )
    assert out.exists()
    plain = tmp_path / "plain.pt"  # the blind model alone, as tools/train.py (and export_onnx) reads it
    qp_probe.main(["plain", "--checkpoint", str(resumed), "--name", "lite-fine", "--out", str(plain)])
    saved = torch.load(plain, weights_only=False)
    model = build_model(ArchConfig.from_dict(saved["config"])).eval()
    model.load_state_dict(saved["model"])
    probe = qp_probe.load_model(init, after, every_layer=False, arch=qp_probe.saved_arch(after)).eval()
    frames = torch.rand(1, 15, 32, 48)
    with torch.no_grad():  # the probe's model with its cue planes at zero is the plain model
        assert torch.allclose(model(frames), probe(frames, torch.zeros(1, 5, 16, 24)), atol=1e-6)
    assert saved["config"]["name"] == "lite-fine" and saved["config"]["unshuffle"] == 2
    with pytest.raises(SystemExit, match="blind"):  # a cue model is not the plain model
        qp_probe.main(["plain", "--checkpoint", str(tmp_path / "qp.pt"), "--name", "qp", "--out", str(plain)])


def test_the_oracle_error_and_the_blind_estimate_read_the_noise_level() -> None:
    """Gaussian noise of sigma 20 on a smooth run (a partial last block row and column): the oracle's block RMS
    and the blind Haar estimate both read about 20; on the clean run the estimate reads about 0."""
    rows, columns = np.mgrid[0:40, 0:72]
    smooth = np.stack([rows * 2, columns * 2, rows + columns], axis=-1).astype(np.uint8) + 40
    clean = np.repeat(smooth[None], 3, axis=0)
    noisy = degrade.add_gaussian_noise(clean, 20.0, np.random.default_rng(4))
    error = qp_probe.error_maps(clean, noisy)
    estimate = qp_probe.estimate_maps(noisy)
    assert error.shape == estimate.shape == (3, 3, 5)
    assert 17 < error.mean() < 22 and error.min() > 12
    assert np.all(np.abs(estimate - 20) < 2.5) and np.ptp(estimate[0]) == 0  # one value a frame
    assert qp_probe.estimate_maps(clean).max() < 1.0
    assert np.array_equal(qp_probe.cue_maps("qp", clean, noisy, error), error)


def test_build_decodes_clips_at_the_size_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The data ablation's switches: half size by default, native with --clip-downscale 1 (under --clip-largest)."""
    clip = write_clip(tmp_path / "clip.mp4", moving_frames(10, 256, 288, seed=2))
    sizes: list[tuple[int, int]] = []
    read_clip = degrade.read_clip

    def recording(path: Path, start: int, stop: int, size: tuple[int, int] = (640, 360)) -> np.ndarray:
        sizes.append(size)
        return read_clip(path, start, stop, size)

    monkeypatch.setattr(degrade, "read_clip", recording)
    for extra in ([], ["--clip-downscale", "1", "--clip-largest", "1920x1080"]):
        qp_probe.main(["build", "--clips", str(clip), "--count", "1", "--out", str(tmp_path / "c.npz"), *extra])
    assert sizes == [(144, 128), (288, 256)]
    with pytest.raises(SystemExit):
        qp_probe.parse_args(["build", "--clips", str(clip), "--clip-largest", "wide", "--out", "c.npz"])
