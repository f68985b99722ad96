"""Structured pruning keeps the highest-L1 filters and yields a smaller working model."""

from __future__ import annotations

import torch

from engines.arch import ArchConfig, build_model, count_macs, count_parameters
from tools.prune import prune_model


def test_prune_halves_hidden_widths_and_keeps_strong_filters() -> None:
    torch.manual_seed(0)
    model = build_model(ArchConfig(name="t", width=16, depth=2)).eval()
    with torch.no_grad():
        model.body[0].weight[3].mul_(100.0)  # make filter 3 of the first layer clearly the strongest
    pruned = prune_model(model, ratio=0.5).eval()
    assert pruned.hidden_widths == [8, 8, 8]
    assert count_parameters(pruned) < count_parameters(model)
    assert count_macs(pruned, 360, 640) < count_macs(model, 360, 640)
    strongest = model.body[0].weight[3]
    assert any(torch.equal(strongest, kept) for kept in pruned.body[0].weight)
    frames = torch.rand(1, 15, 16, 24)
    with torch.no_grad():
        assert pruned(frames).shape == (1, 3, 16, 24)
