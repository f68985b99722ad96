"""tools/checkpoint_from_onnx.py: an exported model back to a checkpoint that reproduces it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tools.synthetic_media import export_tiny_model
from tools import checkpoint_from_onnx

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("causal", [False, True], ids=["centred", "causal"])
def test_the_rebuilt_checkpoint_reproduces_the_exported_model(tmp_path: Path, causal: bool) -> None:
    original, onnx_path = export_tiny_model(tmp_path, causal=causal, weight_std=0.1)
    out = tmp_path / "rebuilt.pt"
    argv = ["--model", str(onnx_path), "--preset", "tiny", "--out", str(out)] + (
        ["--causal"] if causal else []
    )
    assert checkpoint_from_onnx.main(argv) == 0
    state = torch.load(out, weights_only=False)["model"]
    for key, value in original.state_dict().items():  # the folded fusion conv comes back in its training form
        torch.testing.assert_close(state[key], value)


def test_a_recurrent_model_is_rebuilt_with_its_gate_and_state_fusion(tmp_path: Path) -> None:
    original, onnx_path = export_tiny_model(tmp_path, causal=False, weight_std=0.1, recurrent=1)
    out = tmp_path / "rebuilt.pt"
    assert checkpoint_from_onnx.main(["--model", str(onnx_path), "--preset", "tiny", "--out", str(out)]) == 0
    checkpoint = torch.load(out, weights_only=False)
    assert checkpoint["config"]["recurrent"] == 1  # read from the model's metadata
    for key, value in original.state_dict().items():
        torch.testing.assert_close(checkpoint["model"][key], value)


def test_a_recurrent_model_rebuilt_as_a_window_model_is_refused(tmp_path: Path) -> None:
    _, onnx_path = export_tiny_model(tmp_path, causal=False, weight_std=0.1, recurrent=1)
    with pytest.raises(ValueError, match="do not match recurrent=0"):
        checkpoint_from_onnx.main(
            [
                "--model",
                str(onnx_path),
                "--preset",
                "tiny",
                "--recurrent",
                "0",
                "--out",
                str(tmp_path / "x.pt"),
            ]
        )


def test_a_model_of_another_shape_is_refused(tmp_path: Path) -> None:
    _, onnx_path = export_tiny_model(tmp_path, causal=False, weight_std=0.1)
    with pytest.raises(ValueError, match="initialisers of"):
        checkpoint_from_onnx.main(
            ["--model", str(onnx_path), "--preset", "tiny", "--width", "12", "--out", str(tmp_path / "x.pt")]
        )
