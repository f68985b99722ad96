"""A tiny training run on synthetic media builds its cache, checkpoints, and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_media import moving_frames, textured_image, write_clip, write_png

from tools import degrade, train


def test_tiny_train_resumes_from_checkpoint(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", moving_frames(20, 48, 64, seed=1))
    stills = tmp_path / "stills"
    stills.mkdir()
    for index in range(2):
        write_png(stills / f"still{index}.png", textured_image(96, 96, seed=10 + index))
    common = [
        "--clips",
        str(clip),
        "--stills",
        str(stills),
        "--cache",
        str(tmp_path / "cache.npz"),
        "--out",
        str(tmp_path / "run"),
        "--preset",
        "tiny",
        "--cache-sequences",
        "8",
        "--sequence-length",
        "6",
        "--sequence-size",
        "32",
        "--crop",
        "32",
        "--batch",
        "2",
        "--val-sequences",
        "2",
        "--val-every",
        "2",
        "--clip-size",
        "64x48",
    ]
    train.main([*common, "--steps", "2"])
    first = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert first["step"] == 2
    assert set(first["val"]) == {"sigma25", "mixed"}
    assert (tmp_path / "cache.npz").exists()
    train.main([*common, "--steps", "4"])
    second = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert second["step"] == 4
    events = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    starts = [event["step"] for event in events if event.get("event") == "start"]
    assert starts == [0, 2]
    assert not torch.equal(first["model"]["body.0.weight"], second["model"]["body.0.weight"])

    # fine-tune: a new run starts at step 0 from the checkpoint's weights, sampling two caches by weight
    common[common.index("--out") + 1] = str(tmp_path / "finetune")
    common[common.index("--cache") + 1 : common.index("--cache") + 2] = [
        str(tmp_path / "cache.npz"),
        str(tmp_path / "cache_codec.npz"),
    ]
    train.main([*common, "--cache-profile", "mixed", "codec", "--cache-weights", "1", "3",
                "--init", str(tmp_path / "run" / "last.pt"), "--steps", "1", "--lr", "1e-9", "--loss", "l2"])
    tuned = torch.load(tmp_path / "finetune" / "last.pt", weights_only=False)
    assert tuned["step"] == 1
    assert torch.allclose(tuned["model"]["body.0.weight"], second["model"]["body.0.weight"], atol=1e-6)

    # grow: --width above the checkpoint's splits units (Net2Wider); the old units keep their weights
    common[common.index("--out") + 1] = str(tmp_path / "wider")
    train.main([*common, "--init", str(tmp_path / "run" / "last.pt"), "--width", "12", "--steps", "1", "--lr", "1e-9"])
    wider = torch.load(tmp_path / "wider" / "last.pt", weights_only=False)
    assert wider["config"]["width"] == 12
    assert wider["model"]["body.0.weight"].shape[0] == 12
    old_width = second["model"]["body.0.weight"].shape[0]
    assert torch.allclose(wider["model"]["body.0.weight"][:old_width], second["model"]["body.0.weight"], atol=1e-6)

    # a context path grown onto a deepened trunk starts adding nothing: the trunk's weights are kept as they were
    common[common.index("--out") + 1] = str(tmp_path / "context")
    train.main([*common, "--init", str(tmp_path / "run" / "last.pt"), "--depth", "2", "--context-width", "8",
                "--steps", "1", "--lr", "1e-9"])
    context = torch.load(tmp_path / "context" / "last.pt", weights_only=False)
    assert (context["config"]["depth"], context["config"]["context_width"]) == (2, 8)
    assert float(context["model"]["context.out.weight"].abs().max()) < 1e-6
    assert torch.allclose(context["model"]["body.0.weight"], second["model"]["body.0.weight"], atol=1e-6)

    # another window: the frames both windows share keep their fusion weights by offset from the centre
    common[common.index("--out") + 1] = str(tmp_path / "window3")
    train.main([*common, "--init", str(tmp_path / "run" / "last.pt"), "--window", "3", "--steps", "1", "--lr", "1e-9"])
    shorter = torch.load(tmp_path / "window3" / "last.pt", weights_only=False)
    assert (shorter["config"]["window"], shorter["config"]["reference_index"]) == (3, 1)
    fusion = second["model"]["body.0.weight"]
    kept = fusion.reshape(fusion.shape[0], 5, -1, *fusion.shape[2:])[:, 1:4].reshape(fusion.shape[0], -1, *fusion.shape[2:])
    assert torch.allclose(shorter["model"]["body.0.weight"], kept, atol=1e-6)

    # quantisation-aware fine-tune: activation ranges are calibrated once, kept across a resume, and the
    # checkpoint holds plain float weights that the exporter and an unwrapped model load
    common[common.index("--out") + 1] = str(tmp_path / "qat")
    qat = [*common, "--init", str(tmp_path / "run" / "last.pt"), "--qat", "--qat-calibration-batches", "2"]
    train.main([*qat, "--steps", "2", "--stop-at", "1"])
    calibrated = torch.load(tmp_path / "qat" / "last.pt", weights_only=False)
    train.main([*qat, "--steps", "2"])
    resumed = torch.load(tmp_path / "qat" / "last.pt", weights_only=False)
    assert resumed["step"] == 2
    assert len(calibrated["qat_ranges"]) == 3  # inputs of the two convs after the first, and the residual
    assert resumed["qat_ranges"] == calibrated["qat_ranges"]
    assert set(resumed["model"]) == set(second["model"])
    # a fixed residual range is kept as trained; resuming with another one is refused
    qat[qat.index("--out") + 1] = str(tmp_path / "qat_residual")
    train.main([*qat, "--steps", "1", "--qat-residual-range", "0.25"])
    fixed = torch.load(tmp_path / "qat_residual" / "last.pt", weights_only=False)
    assert fixed["qat_ranges"][-1] == {"low": -0.25, "high": 0.25}
    assert fixed["qat_ranges"][:-1] != [{"low": 0.0, "high": 0.0}] * 2  # the others were calibrated
    with pytest.raises(SystemExit, match="residual-range"):
        train.main([*qat, "--steps", "2", "--qat-residual-range", "0.5"])
    with pytest.raises(SystemExit):
        train.parse_args([*common, "--qat-residual-range", "0.5"])  # without --qat
    # resuming a plain run with --qat would have no ranges to round with: refused, naming the problem
    common[common.index("--out") + 1] = str(tmp_path / "run")
    with pytest.raises(SystemExit, match="not trained with --qat"):
        train.main([*common, "--qat", "--steps", "6"])


def test_degradations_keep_shapes_and_change_content() -> None:
    rng = np.random.default_rng(0)
    clean = moving_frames(6, 32, 48, seed=3)
    for degraded in (
        degrade.add_gaussian_noise(clean, 25, rng),
        degrade.add_poisson_gaussian_noise(clean, 0.01, 5, rng),
        degrade.x264_roundtrip(clean, 35),
    ):
        assert degraded.shape == clean.shape and degraded.dtype == np.uint8
        assert np.abs(degraded.astype(int) - clean).mean() > 0.5
    video = degrade.pseudo_video(textured_image(80, 80, seed=4), 5, 32, rng)
    assert video.shape == (5, 32, 32, 3)
    assert degrade.darken(clean, 0.5).mean() < clean.mean() * 0.6
