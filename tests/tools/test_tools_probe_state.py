"""The state probe: per-frame PSNR of a recurrent model's estimate and output, with the gate rescaled or an oracle
state, matching what the model computes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from synthetic_media import textured_image, write_clip

from engines import EngineError
from engines.processing import pack_window
from tests.engines.test_recurrent import export_recurrent_model
from tools import degrade, probe_state


def still_scene(count: int) -> np.ndarray:
    """A fixed camera: the same textured frame with a small square moving across it."""
    frames = np.repeat(textured_image(24, 32, seed=4)[None], count, axis=0)
    for index in range(count):
        frames[index, 8:14, 2 * index : 2 * index + 6] = 250
    return frames


def test_rows_are_what_the_model_computes_with_its_state_fed_back(tmp_path: Path) -> None:
    path = export_recurrent_model(tmp_path, weight_std=0.05)
    clean = still_scene(10)
    rows = probe_state.probe(path, clean, sigma=20.0, threads=1)
    assert [row["frame"] for row in rows] == list(range(2, 8))  # window 5, centred: 6 restored frames
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    noisy = degrade.add_gaussian_noise(clean, 20.0, np.random.default_rng(0))  # the probe's seed
    state = None
    for start, row in enumerate(rows):
        packed = pack_window(list(noisy[start : start + 5]), 4)
        feed = packed[:, 6:9] if state is None else state
        restored, state = session.run(["restored", "next_state"], {"frames": packed, "state": feed})
        output = degrade.to_uint8(restored[0, :, :24, :32].transpose(1, 2, 0))
        assert row["output_db"] == pytest.approx(probe_state.psnr(output, clean[start + 2]))
        assert 0.0 < row["gate_mean"] < 1.0 and row["noisy_db"] < 30


def test_keep_lengthens_the_memory_and_the_oracle_feeds_the_clean_frame(tmp_path: Path) -> None:
    path = export_recurrent_model(tmp_path, weight_std=0.05)
    clean = still_scene(9)
    plain = probe_state.probe(path, clean, sigma=20.0, threads=1)
    kept = probe_state.probe(path, clean, sigma=20.0, keep=0.5, threads=1)
    oracle = probe_state.probe(path, clean, sigma=20.0, oracle=True, threads=1)
    # g' = 1 - 0.5 (1 - g) = 0.5 + g / 2: exactly so at the first frame (same inputs), above 0.5 always
    assert kept[0]["gate_mean"] == pytest.approx(0.5 + plain[0]["gate_mean"] / 2, abs=1e-5)
    assert all(row["gate_mean"] > 0.5 for row in kept)
    assert oracle[-1]["estimate_db"] > plain[-1]["estimate_db"]  # a clean previous state makes a cleaner estimate


def test_scale_shortens_the_memory_and_write_onnx_saves_the_model_so_rescaled(tmp_path: Path) -> None:
    path = export_recurrent_model(tmp_path, weight_std=0.05)
    clean = still_scene(9)
    plain = probe_state.probe(path, clean, sigma=20.0, threads=1)
    scaled = probe_state.probe(path, clean, sigma=20.0, scale=0.5, threads=1)
    assert scaled[0]["gate_mean"] == pytest.approx(plain[0]["gate_mean"] / 2, abs=1e-5)  # same inputs at frame 0
    assert scaled[-1]["output_db"] != pytest.approx(plain[-1]["output_db"], abs=1e-4)
    written = tmp_path / "scaled.onnx"
    assert probe_state.main(["--model", str(path), "--scale", "0.5", "--write-onnx", str(written)]) == 0
    session = ort.InferenceSession(str(written), providers=["CPUExecutionProvider"])
    assert [output.name for output in session.get_outputs()] == ["restored", "next_state"]  # the engine's contract
    # run as it is, the written model computes what the probe ran with the gate rescaled
    assert probe_state.probe(written, clean, sigma=20.0, threads=1)[-1]["output_db"] == pytest.approx(
        scaled[-1]["output_db"], abs=1e-6
    )


def test_command_line_writes_rows_and_refuses_a_window_model(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "still.mp4", still_scene(9))
    path = export_recurrent_model(tmp_path, weight_std=0.05)
    out = tmp_path / "rows.json"
    probe_state.main(["--model", str(path), "--clip", str(clip), "--frames", "9", "--size", "32x24", "--threads", "1",
                      "--json", str(out)])  # fmt: skip
    written = json.loads(out.read_text())
    assert len(written["rows"]) == 5 and set(written["second_half_mean"]) == set(written["rows"][0]) - {"frame"}
    with pytest.raises(EngineError, match="not a recurrent model"):
        probe_state.main(["--model", "lite", "--clip", str(clip), "--frames", "9", "--size", "32x24"])
