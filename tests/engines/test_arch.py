"""The model family: growing a trained model deeper or wider keeps what it computes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from engines.arch import (
    ArchConfig,
    WindowRestorer,
    build_model,
    count_macs,
    deepen_state,
    preset,
    retarget_state,
    widen_state,
)


def trained_looking_model(config: ArchConfig) -> WindowRestorer:
    """A model whose weights are perturbed away from the init, so function-preserving growth is tested for real."""
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def grown_with_fresh_path(
    trunk: WindowRestorer, config: ArchConfig, prefix: str, frames: torch.Tensor
) -> WindowRestorer:
    """``config``'s model with ``trunk``'s weights and a fresh path (parameters under ``prefix``), as tools/train.py
    --init grows it; checks that it computes what the trunk did on ``frames`` and that the path then gets gradients."""
    torch.manual_seed(1)
    grown = build_model(config).eval()
    fresh = {key: value for key, value in grown.state_dict().items() if key.startswith(prefix)}
    grown.load_state_dict({**fresh, **trunk.state_dict()})
    with torch.no_grad():
        assert torch.equal(trunk(frames), grown(frames))
    grown(frames).mean().backward()
    return grown


def test_deepen_state_keeps_the_function_and_adds_layers() -> None:
    config = preset("tiny")
    shallow = trained_looking_model(config)
    deeper_config = dataclasses.replace(config, depth=config.depth + 2)
    deeper = build_model(deeper_config).eval()
    deeper.load_state_dict(deepen_state(shallow.state_dict(), config.depth, deeper_config.depth))
    frames = torch.rand(2, 15, 32, 48)
    with torch.no_grad():
        assert torch.allclose(shallow(frames), deeper(frames), atol=1e-6)
    assert count_macs(deeper, 32, 48) > count_macs(shallow, 32, 48)


def test_widen_state_keeps_the_function_and_breaks_symmetry() -> None:
    config = preset("tiny")
    narrow = trained_looking_model(config)
    wide_config = dataclasses.replace(config, width=config.width * 2 + 3)
    wide = build_model(wide_config).eval()
    wide.load_state_dict(widen_state(narrow.state_dict(), config.depth, wide_config.width, seed=1))
    frames = torch.rand(2, 15, 32, 48)
    with torch.no_grad():
        # well under one 8-bit level
        assert (narrow(frames) - wide(frames)).abs().max() < 0.5 / 255
    first = wide.body[0].weight
    assert first.shape[0] == wide_config.width
    copies = first[config.width :]
    assert not any(torch.equal(copy, original) for copy in copies for original in first[: config.width])


def test_retarget_state_makes_a_causal_model_that_starts_where_the_centred_one_was() -> None:
    centred_config = preset("tiny")
    centred = trained_looking_model(centred_config)
    causal_config = preset("tiny", causal=True)
    causal = build_model(causal_config).eval()
    state = retarget_state(
        centred.state_dict(), 5, 5, centred_config.reference_index, causal_config.reference_index
    )
    causal.load_state_dict(state)
    # on a still scene every slot holds the same frame, so the summed neighbour weights give the same output
    still = torch.rand(1, 3, 32, 48).repeat(1, 5, 1, 1)
    with torch.no_grad():
        assert torch.allclose(centred(still), causal(still), atol=1e-5)
    # slots farther back than the centred window reached start at zero
    fusion = state["body.0.weight"].reshape(state["body.0.weight"].shape[0], 5, -1)
    assert fusion[:, :2].abs().max() == 0
    # and back: the causal slots' weights are shared between the two centred slots at the same distance
    centred_again = build_model(centred_config).eval()
    centred_again.load_state_dict(
        retarget_state(state, 5, 5, causal_config.reference_index, centred_config.reference_index)
    )
    with torch.no_grad():
        assert torch.allclose(centred_again(still), causal(still), atol=1e-5)


def test_retarget_state_grows_a_centred_window_without_changing_what_the_model_computes() -> None:
    five_config = preset("tiny")
    five = trained_looking_model(five_config)
    seven_config = preset("tiny", window=7)
    seven = build_model(seven_config).eval()
    state = retarget_state(five.state_dict(), 5, 7, five_config.reference_index, seven_config.reference_index)
    seven.load_state_dict(state)
    # moving content: the old frames keep their weights by signed offset, the two new outer frames start at zero
    frames = torch.rand(1, 7 * 3, 32, 48)
    with torch.no_grad():
        assert torch.allclose(five(frames[:, 3:18]), seven(frames), atol=1e-5)
    fusion = state["body.0.weight"].reshape(state["body.0.weight"].shape[0], 7, -1)
    assert fusion[:, 0].abs().max() == 0 and fusion[:, 6].abs().max() == 0
    # shrinking back drops the outer slots and gives the 5-frame weights back exactly (not summed by distance)
    back = retarget_state(state, 7, 5, seven_config.reference_index, five_config.reference_index)
    assert torch.equal(back["body.0.weight"], five.state_dict()["body.0.weight"])


def test_a_detail_path_added_to_a_trained_trunk_starts_where_the_trunk_was() -> None:
    """Warm start (tools/train.py --init with --preset detail): the fresh path adds nothing, yet learns (its last
    conv gets a gradient), and it is what makes the model costlier (half-resolution convs)."""
    trunk = trained_looking_model(preset("tiny"))
    config = dataclasses.replace(preset("tiny"), detail_width=8, detail_depth=1)
    detailed = grown_with_fresh_path(trunk, config, "detail.", torch.rand(2, 15, 32, 48))
    assert detailed.detail is not None
    assert float(detailed.detail.convs()[-1].weight.grad.abs().max()) > 0
    extra = count_macs(detailed, 32, 48) - count_macs(trunk, 32, 48)
    assert extra == (6 * 8 * 16 + (8 + 2) * 8 * 9 + 8 * 8 * 9 + 8 * 12 * 9) * 16 * 24
    assert len(detailed.detail.convs()) == 4


def test_a_recurrent_model_grown_from_a_window_model_starts_where_it_was_and_learns_to_use_its_state() -> None:
    """tools/train_recurrent.py --init: the state's fusion weights start at zero and its gate nearly closed, so the
    grown model computes what the window model did (exactly, with the gate shut); the gate and the fusion get a
    gradient. The gate blends the reference frame into the running estimate: shut, the next state is the
    reference frame; open, it is the state. Without a state the model starts from its reference frame."""
    window_model = trained_looking_model(preset("tiny"))
    recurrent = build_model(preset("tiny", recurrent=True)).eval()
    missing = recurrent.load_state_dict(window_model.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["gate.inlet.bias", "gate.inlet.weight", "gate.out.bias", "gate.out.weight",
                               "state_fusion.weight"]  # fmt: skip
    frames, state = torch.rand(2, 15, 32, 48), torch.rand(2, 3, 32, 48)
    reference = frames[:, 6:9]
    assert recurrent.gate is not None and recurrent.state_fusion is not None
    with torch.no_grad():
        assert abs(float(torch.sigmoid(recurrent.gate.out.bias[0])) - 0.018) < 0.001
        next_state = recurrent.step(frames, state)[1]
        assert float((next_state - reference).abs().max()) < 0.02
    recurrent.step(frames, state)[0].mean().backward()
    assert float(recurrent.gate.out.weight.grad.abs().max()) > 0
    assert float(recurrent.state_fusion.weight.grad.abs().max()) > 0
    with torch.no_grad():
        recurrent.gate.out.bias.fill_(-30.0)  # shut
        restored, next_state = recurrent.step(frames, state)
        assert torch.equal(restored, window_model(frames)) and torch.equal(next_state, reference)
        recurrent.gate.out.bias.fill_(30.0)  # open
        assert torch.equal(recurrent.step(frames, state)[1], state)
        recurrent.gate.out.bias.fill_(0.0)
        recurrent.state_fusion.weight.normal_(0, 0.05)
        assert not torch.equal(recurrent(frames, state), recurrent(frames, torch.rand(2, 3, 32, 48)))
        assert torch.equal(recurrent(frames), recurrent(frames, reference))
    extra = count_macs(recurrent, 32, 48) - count_macs(window_model, 32, 48)
    assert extra == (48 * 8 + 9 * 16 * 16 + 16 * 16 * 9) * 8 * 12


def test_an_output_feedback_model_carries_its_restored_frame_and_loads_an_estimate_models_weights() -> None:
    """``recurrent=2`` (EMVD's recursion): the same weights as ``recurrent=1``, the same restored frame for the
    same state, but the next state is that restored frame rather than the blended reference."""
    estimate_model = trained_looking_model(preset("tiny", recurrent=True))
    output_model = build_model(dataclasses.replace(estimate_model.config, recurrent=2)).eval()
    output_model.load_state_dict(estimate_model.state_dict())
    frames, state = torch.rand(2, 15, 32, 48), torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        restored, next_state = output_model.step(frames, state)
        assert torch.equal(restored, estimate_model.step(frames, state)[0])
        assert torch.equal(next_state, restored)
        assert not torch.equal(next_state, estimate_model.step(frames, state)[1])


def test_a_gate_with_the_frame_cue_starts_as_the_local_gate_and_then_sees_the_whole_frame() -> None:
    """``gate_context=1``: a recurrent model's weights load into it with only the cue's conv missing, it computes
    what the model did (the cue starts at zero) and the cue gets a gradient; once trained, the blend at one pixel
    depends on pixels far outside the gate's 12-pixel view."""
    config = preset("tiny", recurrent=True)
    local = trained_looking_model(config)
    cued = build_model(dataclasses.replace(config, gate_context=1)).eval()
    missing = cued.load_state_dict(local.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["gate.context.bias", "gate.context.weight"]
    frames, state = torch.rand(2, 15, 32, 48), torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        assert all(torch.equal(ours, theirs) for ours, theirs in zip(cued.step(frames, state), local.step(frames, state), strict=True))
    cued.step(frames, state)[0].mean().backward()
    assert cued.gate is not None and cued.gate.context is not None
    assert float(cued.gate.context.weight.grad.abs().max()) > 0
    with torch.no_grad():
        cued.gate.context.weight.normal_(0, 0.5)
        far = frames.clone()
        far[:, :, 24:, 36:] = torch.rand(2, 15, 8, 12)  # the corner only, 24+ pixels from the top-left blend
        near_state, far_state = cued.step(frames, state)[1], cued.step(far, state)[1]
        assert float((near_state[:, :, :8, :8] - far_state[:, :, :8, :8]).abs().max()) > 1e-4
        local_near, local_far = local.step(frames, state)[1], local.step(far, state)[1]
        assert torch.equal(local_near[:, :, :8, :8], local_far[:, :, :8, :8])
    extra = count_macs(cued, 32, 48) - count_macs(local, 32, 48)
    assert extra == 16 * 16


def test_widen_state_keeps_a_recurrent_model_s_function_with_its_state() -> None:
    config = preset("tiny", recurrent=True)
    narrow = trained_looking_model(config)
    wide_config = dataclasses.replace(config, width=config.width + 5)
    wide = build_model(wide_config).eval()
    wide.load_state_dict(widen_state(narrow.state_dict(), config.depth, wide_config.width, seed=2))
    frames, state = torch.rand(2, 15, 32, 48), torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        (narrow_out, narrow_next), (wide_out, wide_next) = narrow.step(frames, state), wide.step(frames, state)
    assert (narrow_out - wide_out).abs().max() < 0.5 / 255
    assert torch.equal(narrow_next, wide_next)
    assert wide.state_fusion is not None and wide.state_fusion.weight.shape[0] == wide_config.width


def test_widen_state_keeps_a_context_model_s_function_and_refuses_what_it_cannot_grow() -> None:
    """The context path reads the first layer and adds to the middle one: widened, it computes what it did (under
    one 8-bit level); growing its depth past the middle layer, or widening a detail-path model, is refused."""
    config = dataclasses.replace(preset("fine"), width=8, depth=4, context_width=8, context_depth=1)
    narrow = trained_looking_model(config)
    wide_config = dataclasses.replace(config, width=13)
    wide = build_model(wide_config).eval()
    wide.load_state_dict(widen_state(narrow.state_dict(), config.depth, wide_config.width, seed=3))
    frames = torch.rand(1, 15, 64, 96)
    with torch.no_grad():
        assert (narrow(frames) - wide(frames)).abs().max() < 0.5 / 255
    assert len(deepen_state(narrow.state_dict(), 4, 5)) == len(narrow.state_dict()) + 2  # the middle stays
    with pytest.raises(ValueError, match="context path"):
        deepen_state(narrow.state_dict(), 4, 6)
    detail = preset("detail")
    with pytest.raises(ValueError, match="detail path"):
        widen_state(build_model(detail).state_dict(), detail.depth, detail.width + 4)


def test_fine_wide_preset_is_the_fine_trunk_widened_within_lite_detail_cost() -> None:
    """``fine-wide`` (lite-fine-wide) is ``fine`` at 1.5x the width: the same design, within 10 % of lite-detail's MACs."""
    fine, wide = preset("fine"), preset("fine-wide")
    assert dataclasses.replace(wide, name=fine.name, width=fine.width) == fine and wide.width == 48
    detail = build_model(preset("detail")).eval()
    assert count_macs(build_model(wide).eval(), 360, 640) <= 1.1 * count_macs(detail, 360, 640)


def test_fine_preset_restores_at_half_resolution_for_about_lite_cost() -> None:
    """``fine`` (lite-fine) is lite's design at 2x2 space-to-depth and half its width: its trunk sees four times as
    many positions, and it still costs no more multiply-adds than lite."""
    fine, lite = build_model(preset("fine")).eval(), build_model(preset("lite")).eval()
    assert fine.config.unshuffle == 2 and lite.config.unshuffle == 4
    assert count_macs(fine, 360, 640) <= count_macs(lite, 360, 640)
    frames = torch.rand(1, 15, 34, 50)  # a multiple of 2 (not of 4) is all the finer trunk needs
    with torch.no_grad():
        assert fine(frames).shape == (1, 3, 34, 50)


def test_a_context_path_added_to_a_trained_trunk_starts_where_it_was_and_sees_farther() -> None:
    """Warm start (tools/train.py --init with --preset fine-context): the fresh path adds nothing yet learns; once
    trained it lets the trunk see past its own 22-pixel view; frames must be multiples of 4x the trunk's factor."""
    trunk_config = dataclasses.replace(preset("fine"), width=8)
    trunk = trained_looking_model(trunk_config)
    config = dataclasses.replace(trunk_config, context_width=8, context_depth=1)
    assert config.pad_multiple() == 8 and trunk_config.pad_multiple() == 2
    frames = torch.rand(1, 15, 64, 96)
    widened = grown_with_fresh_path(trunk, config, "context.", frames)
    assert widened.context is not None
    assert float(widened.context.out.weight.grad.abs().max()) > 0
    # down1, merge and out at 1/2 of the trunk's resolution (1/4 of the frame's); down2, the middle layer and up at 1/4
    quarter, eighth = 16 * 24, 8 * 12
    extra = (8 * 8 * 9 + 8 * 8 * 9 + 8 * 32) * quarter + (8 * 8 * 9 + 8 * 8 * 9 + 8 * 32) * eighth
    assert count_macs(widened, 64, 96) - count_macs(trunk, 64, 96) == extra

    with torch.no_grad():
        widened.context.out.weight.normal_(0, 0.1)  # as if trained
        far = frames.clone()
        # one pixel changed in every frame; the trunk reaches 12 pixels from it (columns 54-78), the path farther
        far[:, :, 32, 66] = 1 - far[:, :, 32, 66]
        for model, sees in ((trunk, False), (widened, True)):
            change = (model(far) - model(frames))[0, :, 24:40, 40:50].abs().max()
            assert (float(change) > 0) is sees
