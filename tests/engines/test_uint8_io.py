"""The uint8-in, uint8-out wrapper of a model (what the TensorRT backend builds), run on ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from engines import DEFAULT_MODEL, EngineError, create_engine
from engines.onnx_cpu import read_model_info
from engines.processing import padded_size
from engines.uint8_io import U8_INPUT, U8_OUTPUT, pack_uint8, wrap_uint8, wrapped_model_bytes
from tests.media import add_noise, clean_frames


@pytest.fixture(scope="module")
def wrapped() -> ort.InferenceSession:
    info = read_model_info(DEFAULT_MODEL)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(wrapped_model_bytes(DEFAULT_MODEL, info.window), options,
                                providers=["CPUExecutionProvider"])


def windows_of(count: int, height: int, width: int, seed: int) -> list[list[np.ndarray]]:
    frames = add_noise(clean_frames(width, height, count + 4, seed=seed), 15, seed=seed)
    return [frames[start:start + 5] for start in range(count)]


def test_the_wrapped_model_restores_what_the_float_cpu_engine_restores(wrapped: ort.InferenceSession) -> None:
    info = read_model_info(DEFAULT_MODEL)
    windows = windows_of(3, 90, 150, seed=1)  # not multiples of the model's: padded on the host, cropped after
    packed = pack_uint8(windows, info.pad_multiple)
    padded = padded_size(90, 150, info.pad_multiple)
    assert padded != (90, 150) and packed.shape == (15, *padded, 3) and packed.dtype == np.uint8
    (restored,) = wrapped.run([U8_OUTPUT], {U8_INPUT: packed})
    assert restored.shape == (3, *padded, 3) and restored.dtype == np.uint8
    with create_engine("cpu", DEFAULT_MODEL, threads=1, int8=False) as engine:
        for index, window in enumerate(windows):
            expected = engine.infer(window)
            difference = np.abs(restored[index, :90, :150].astype(int) - expected.astype(int))
            assert difference.max() <= 1 and (difference == 0).mean() > 0.999  # float sums in another order


def test_padding_repeats_the_last_row_and_column_and_a_preallocated_buffer_is_reused() -> None:
    window = [np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3) + index for index in range(2)]
    buffer = np.zeros(4096, np.uint8)
    packed = pack_uint8([window], 4, out=buffer)
    assert packed.shape == (2, 4, 8, 3) and np.shares_memory(packed, buffer)
    for index, frame in enumerate(window):
        assert (packed[index, :3, :5] == frame).all()
        assert (packed[index, 3, :5] == frame[2]).all()  # the last row again
        assert (packed[index, :, 5:] == packed[index, :, 4:5]).all()  # the last column again
    with pytest.raises(EngineError, match="uint8"):
        pack_uint8([[window[0], window[1].astype(np.float32)]], 4)


def test_a_model_without_the_contract_is_refused() -> None:
    import onnx

    model = onnx.load(str(DEFAULT_MODEL))
    model.graph.input[0].name = "images"
    with pytest.raises(EngineError, match="one input 'frames'"):
        wrap_uint8(model, 5)
