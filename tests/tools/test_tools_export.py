"""Export of a tiny model writes the streamer metadata contract and ONNX Runtime matches PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from synthetic_media import export_tiny_model


def test_export_writes_contract_and_matches_torch(tmp_path: Path) -> None:
    model, out = export_tiny_model(tmp_path, causal=True, weight_std=0.1)

    proto = onnx.load(str(out))
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    assert meta == {
        "streamer.window": "5",
        "streamer.reference_index": "4",
        "streamer.scale": "1",
        "streamer.pad_multiple": "4",
        "streamer.colorspace": "rgb",
        "streamer.range": "0-1",
        "streamer.name": "tiny-causal",
    }
    assert [node.name for node in proto.graph.input] == ["frames"]
    assert [node.name for node in proto.graph.output] == ["restored"]
    assert all(op.version == 17 for op in proto.opset_import if op.domain in ("", "ai.onnx"))

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    frames = np.random.default_rng(1).random((2, 15, 20, 28), dtype=np.float32)
    restored = session.run(["restored"], {"frames": frames})[0]
    assert restored.shape == (2, 3, 20, 28)
    assert restored.min() >= 0.0 and restored.max() <= 1.0
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(frames)).numpy()
    assert np.abs(restored - expected).max() < 1e-4
    assert np.abs(restored - frames[:, 12:15]).mean() > 1e-3  # the residual is not trivially zero
