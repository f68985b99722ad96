"""The model family: growing a trained model deeper keeps what it computes."""

from __future__ import annotations

import dataclasses

import torch

from engines.arch import build_model, count_macs, deepen_state, preset


def test_deepen_state_keeps_the_function_and_adds_layers() -> None:
    torch.manual_seed(0)
    config = preset("tiny")
    shallow = build_model(config).eval()
    with torch.no_grad():
        for parameter in shallow.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    deeper_config = dataclasses.replace(config, depth=config.depth + 2)
    deeper = build_model(deeper_config).eval()
    deeper.load_state_dict(deepen_state(shallow.state_dict(), config.depth, deeper_config.depth))
    frames = torch.rand(2, 15, 32, 48)
    with torch.no_grad():
        assert torch.allclose(shallow(frames), deeper(frames), atol=1e-6)
    assert count_macs(deeper, 32, 48) > count_macs(shallow, 32, 48)
