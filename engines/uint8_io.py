"""A restoration model with uint8 frames in and out: the packing and unpacking run inside the network.

The shipped models take float32 ``[B, N*3, H, W]`` in [0, 1] and return float32 ``[B, 3, H*s, W*s]``; the CPU
backend converts on the host (``engines.processing``), once per frame. On a GPU that conversion is better
done by the GPU: ``wrap_uint8`` puts it in the graph, so TensorRT fuses it with the first and last layers and
the host sends a quarter of the bytes:

    frames_u8   uint8 [B*N, H, W, 3]  (B windows of N frames each, window after window, RGB interleaved;
                                       H and W already multiples of the model's pad_multiple)
      -> Cast float -> Transpose [B*N, 3, H, W] -> Reshape [B, N*3, H, W] -> x (1/255)   = the model's input
    the model's output [B, 3, Hs, Ws]
      -> x 255 + 0.5 -> Clip [0, 255] -> Floor -> Transpose -> Cast uint8                 = restored_u8
    restored_u8 uint8 [B, H*s, W*s, 3]

The same arithmetic as ``pack_window`` / ``unpack_output`` (scale by float32 1/255; round half up, clipped),
so the wrapped model on ONNX Runtime matches the CPU engine's float path (tests/engines/test_uint8_io.py).
Edge padding to the model's multiple stays on the host, in uint8 (``pack_uint8``): cheap there, and the
graph keeps only operators TensorRT imports without plugins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engines.base import INPUT_NAME, OUTPUT_NAME, EngineError
from engines.processing import padded_size

U8_INPUT = "frames_u8"
U8_OUTPUT = "restored_u8"
WRAPPER_VERSION = "u8io-2"  # part of a TensorRT engine's cache key: a change here rebuilds the engines


def wrap_uint8(model: Any, window: int) -> Any:
    """A copy of ``model`` (an ``onnx.ModelProto`` with the ``frames`` -> ``restored`` contract) whose input
    and output are uint8 frames, laid out as the module docstring says."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    if [value.name for value in graph.input] != [INPUT_NAME] or [value.name for value in graph.output] != [OUTPUT_NAME]:
        raise EngineError(f"model must have one input {INPUT_NAME!r} and one output {OUTPUT_NAME!r}")
    wrapped = onnx.ModelProto()
    wrapped.CopyFrom(model)
    graph = wrapped.graph
    constants = [
        numpy_helper.from_array(np.array([-1, 3 * window, 0, 0], dtype=np.int64), "u8io_shape"),
        numpy_helper.from_array(np.array(1.0 / 255.0, dtype=np.float32), "u8io_inv255"),
        numpy_helper.from_array(np.array(255.0, dtype=np.float32), "u8io_255"),
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "u8io_half"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "u8io_zero"),
    ]
    # the uint8 tensors touch only the Casts (TensorRT takes uint8 at the network's edges, through a Cast)
    before = [
        helper.make_node("Cast", [U8_INPUT], ["u8io_float"], to=TensorProto.FLOAT, name="u8io_float"),
        helper.make_node("Transpose", ["u8io_float"], ["u8io_planar"], perm=[0, 3, 1, 2], name="u8io_planar"),
        helper.make_node("Reshape", ["u8io_planar", "u8io_shape"], ["u8io_windows"], name="u8io_windows"),
        helper.make_node("Mul", ["u8io_windows", "u8io_inv255"], [INPUT_NAME], name="u8io_scale"),
    ]
    after = [
        helper.make_node("Mul", [OUTPUT_NAME, "u8io_255"], ["u8io_out255"], name="u8io_out255"),
        helper.make_node("Add", ["u8io_out255", "u8io_half"], ["u8io_rounding"], name="u8io_rounding"),
        helper.make_node("Clip", ["u8io_rounding", "u8io_zero", "u8io_255"], ["u8io_clipped"], name="u8io_clip"),
        helper.make_node("Floor", ["u8io_clipped"], ["u8io_floor"], name="u8io_floor"),
        helper.make_node("Transpose", ["u8io_floor"], ["u8io_interleaved"], perm=[0, 2, 3, 1], name="u8io_interleave"),
        helper.make_node("Cast", ["u8io_interleaved"], [U8_OUTPUT], to=TensorProto.UINT8, name="u8io_bytes"),
    ]
    nodes = [*before, *graph.node, *after]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(constants)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(U8_INPUT, TensorProto.UINT8, ["frames", "height", "width", 3]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(U8_OUTPUT, TensorProto.UINT8,
                                                      ["batch", "out_height", "out_width", 3]))
    return wrapped


def wrapped_model_bytes(model_path: Path, window: int) -> bytes:
    """``model_path`` wrapped by ``wrap_uint8``, serialised (deterministic: the same file gives the same bytes)."""
    import onnx

    try:
        model = onnx.load(str(model_path))
    except Exception as error:
        raise EngineError(f"cannot read model {model_path}: {error}") from None
    return bytes(wrap_uint8(model, window).SerializeToString())


def pack_uint8(windows: list[list[np.ndarray]], multiple: int, out: np.ndarray | None = None) -> np.ndarray:
    """B windows of N RGB uint8 frames (H x W x 3) -> uint8 [B*N, Hp, Wp, 3], edge-padded to ``multiple``.
    Written into ``out`` (e.g. a pinned host buffer) when it is given and large enough."""
    height, width = windows[0][0].shape[:2]
    padded_h, padded_w = padded_size(height, width, multiple)
    count = sum(len(window) for window in windows)
    shape = (count, padded_h, padded_w, 3)
    size = int(np.prod(shape))
    if out is None or out.size < size:
        out = np.empty(shape, dtype=np.uint8)
    else:
        out = out.reshape(-1)[:size].reshape(shape)
    slot = 0
    for window in windows:
        for frame in window:
            if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
                raise EngineError(f"every frame of a batch must be {height}x{width}x3 uint8, got {frame.shape} {frame.dtype}")
            target = out[slot]
            target[:height, :width] = frame
            if padded_h != height:
                target[height:, :width] = frame[height - 1]
            if padded_w != width:
                target[:, width:] = target[:, width - 1 : width]
            slot += 1
    return out
