"""Averaging fine-tunes (tools/average_checkpoints.py): weighted mean weights and ranges, refusals that name why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from engines.arch import build_model, preset
from tools import average_checkpoints
from tools.export_onnx import load_model


def checkpoint(seed: int, recurrent: bool = True, high: float | None = None) -> dict[str, Any]:
    torch.manual_seed(seed)
    config = preset("tiny", recurrent=recurrent)
    ranges = None if high is None else [{"low": 0.0, "high": high}, {"low": -0.4, "high": 0.4}]
    return {"model": build_model(config).state_dict(), "config": config.to_dict(), "qat_ranges": ranges}


def test_weighted_mean_of_weights_and_ranges_loads_as_a_model(tmp_path: Path) -> None:
    first, second = checkpoint(1, high=2.0), checkpoint(2, high=6.0)
    paths = [tmp_path / "a.pt", tmp_path / "b.pt"]
    torch.save(first, paths[0])
    torch.save(second, paths[1])
    out = tmp_path / "soup.pt"
    average_checkpoints.main(["--checkpoint", *map(str, paths), "--weights", "3", "1", "--out", str(out)])
    soup = torch.load(out, weights_only=False)
    for key, tensor in soup["model"].items():
        expected = 0.75 * first["model"][key].double() + 0.25 * second["model"][key].double()
        assert torch.allclose(tensor.double(), expected, atol=1e-6), key
    assert soup["qat_ranges"] == [{"low": 0.0, "high": 3.0}, {"low": -0.4, "high": 0.4}]
    model = load_model(out)  # what tools/export_onnx.py reads
    assert model.config.recurrent == 1


def test_ranges_are_dropped_unless_every_checkpoint_has_them() -> None:
    soup = average_checkpoints.average_checkpoints([checkpoint(1, high=2.0), checkpoint(2)], [1.0, 1.0])
    assert soup["qat_ranges"] is None


def test_other_architectures_and_bad_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="another architecture than checkpoint 0"):
        average_checkpoints.average_checkpoints([checkpoint(1), checkpoint(2, recurrent=False)], [1.0, 1.0])
    with pytest.raises(ValueError, match="one non-negative weight each"):
        average_checkpoints.average_checkpoints([checkpoint(1), checkpoint(2)], [1.0])
    with pytest.raises(ValueError, match="two or more checkpoints"):
        average_checkpoints.average_checkpoints([checkpoint(1)], [1.0])
