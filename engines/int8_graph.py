"""Faster forms of a QDQ int8 graph for ONNX Runtime's CPU provider, made when the engine loads it; the
restored frames do not change (bit for bit: tests/engines/test_int8_graph.py).

``tools/quantize.py`` writes int8 models in QDQ form: each int8 tensor is a QuantizeLinear / DequantizeLinear
pair, which ONNX Runtime fuses with the convolutions around it into QLinearConv. Three patterns in our graphs
cost more than they need (measured on `lite-detail-recurrent` at 640x360, 2 threads, ONNX Runtime's profiler:
16.5 ms of 35 in QLinearConv, most of the rest in format changes):

- a quantised convolution with few output channels (a detail path's last one: 12, for PixelShuffle(2) of RGB)
  runs QLinearConv's kernels at a fraction of their width (3.3 ms, its costliest layer, for a third of the
  work of the 32-channel ones beside it). Its weights get zero rows up to a multiple of ``CHANNEL_MULTIPLE``
  and a Slice after its quantisation drops the extra channels again (-1.5 ms).
- ``DequantizeLinear -> DepthToSpace``: a detail path's PixelShuffle runs on float (four bytes an element)
  and the concatenation after it stays float too, quantised again for the next convolution. DepthToSpace only
  moves elements, so with a per-tensor scale it commutes with the dequantisation: moved before it, it runs on
  uint8 and the concatenation's inputs are both dequantised int8 tensors, which ONNX Runtime fuses into
  QLinearConcat (ONNX Runtime alone: `lite-detail-recurrent` int8 33.1 -> 28.1 ms, `lite-detail` 25.5 -> 23.0).
- ``frames -> QuantizeLinear`` with scale 1/255 and zero point 0: the engine converts 8-bit video to float
  only for the graph's first node to convert it back. The input becomes uint8 (the engine packs the frames'
  bytes as they are: a quarter of the memory traffic), and the node goes (0.9 ms of `lite`'s 8.9).

Each rewrite checks its pattern exactly and leaves anything else as it is; a float model has none of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engines.base import INPUT_NAME

VIDEO_SCALE = np.float32(1.0 / 255.0)  # the input scale tools/quantize.py fixes: uint8 video in [0, 1]
CHANNEL_MULTIPLE = 16  # output channels QLinearConv runs at full width (ONNX Runtime's NHWC int8 kernels)


def optimize_for_cpu(model: Any) -> tuple[Any, bool]:
    """Rewrite ``model`` (an ``onnx.ModelProto``, changed in place) for the CPU provider; returns it and whether
    its ``frames`` input now takes uint8 (the frames' 8-bit values, not divided by 255)."""
    pad_output_channels(model.graph)
    move_depth_to_space_before_dequantize(model.graph)
    return model, feed_uint8_frames(model.graph)


def _initializers(graph: Any) -> dict[str, Any]:
    return {tensor.name: tensor for tensor in graph.initializer}


def _rename_input(nodes: Any, old: str, new: str) -> None:
    """Make ``nodes`` read the tensor ``new`` wherever they read ``old``."""
    for node in nodes:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new


def _scalar(tensor: Any) -> Any:
    from onnx import numpy_helper

    value = numpy_helper.to_array(tensor)
    return value if value.ndim == 0 or value.size == 1 else None


def move_depth_to_space_before_dequantize(graph: Any) -> int:
    """``DequantizeLinear(q, s, z) -> DepthToSpace`` becomes ``DepthToSpace(q) -> DequantizeLinear(s, z)`` where
    the scale is per tensor (the dequantised tensor keeps its other readers); the number of nodes rewritten."""
    from onnx import helper

    constants = _initializers(graph)
    producers = {output: node for node in graph.node for output in node.output}
    rewritten = 0
    for node in list(graph.node):
        if node.op_type != "DepthToSpace":
            continue
        dequantize = producers.get(node.input[0])
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or dequantize.attribute:
            continue  # an ``axis`` attribute means per-channel (or blocked) scales
        if any(name not in constants or _scalar(constants[name]) is None for name in dequantize.input[1:]):
            continue
        moved = node.output[0] + "_quantized"
        attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
        shuffle = helper.make_node("DepthToSpace", [dequantize.input[0]], [moved], name=node.name + "_quantized",
                                   **attributes)
        after = helper.make_node("DequantizeLinear", [moved, *dequantize.input[1:]], [node.output[0]],
                                 name=node.name + "_dequantize")
        index = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(index, after)
        graph.node.insert(index, shuffle)
        still_read = any(dequantize.output[0] in other.input for other in graph.node)
        if not still_read and dequantize.output[0] not in {output.name for output in graph.output}:
            graph.node.remove(dequantize)  # read only by the shuffle: not computed for nothing
        rewritten += 1
    return rewritten


def feed_uint8_frames(graph: Any) -> bool:
    """Where ``frames`` goes only into a QuantizeLinear to uint8 with scale 1/255 and zero point 0, the input
    becomes that uint8 tensor and the node goes; True when rewritten."""
    from onnx import TensorProto

    readers = [node for node in graph.node if INPUT_NAME in node.input]
    if len(readers) != 1 or readers[0].op_type != "QuantizeLinear" or readers[0].attribute:
        return False
    quantize = readers[0]
    constants = _initializers(graph)
    if len(quantize.input) != 3 or any(name not in constants for name in quantize.input[1:]):
        return False
    scale, zero_point = (_scalar(constants[name]) for name in quantize.input[1:])
    if scale is None or zero_point is None or zero_point.dtype != np.uint8 or int(zero_point.reshape(())) != 0:
        return False
    if np.float32(scale.reshape(())) != VIDEO_SCALE:
        return False
    source = next((item for item in graph.input if item.name == INPUT_NAME), None)
    if source is None or source.type.tensor_type.elem_type != TensorProto.FLOAT:
        return False
    if any(output.name == quantize.output[0] for output in graph.output):
        return False
    source.type.tensor_type.elem_type = TensorProto.UINT8
    graph.node.remove(quantize)
    _rename_input(graph.node, quantize.output[0], INPUT_NAME)
    return True


def pad_output_channels(graph: Any, multiple: int = CHANNEL_MULTIPLE) -> int:
    """A QDQ convolution ``DequantizeLinear(w) , DequantizeLinear(b) -> Conv -> QuantizeLinear`` (its output read
    only by that per-tensor quantisation, its weights and bias read by nothing else) with C output channels, C not
    a multiple of ``multiple``: the weights, bias, scales and zero points get rows up to the multiple (zero
    weights and bias: the extra channels are the zero point, never read) and ``Slice(0:C)`` on the channel axis
    follows the quantisation. The number of convolutions padded."""
    from onnx import helper, numpy_helper

    constants = _initializers(graph)
    producers = {output: node for node in graph.node for output in node.output}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {output.name for output in graph.output}
    padded = 0
    for conv in list(graph.node):
        grouped = any(attribute.name == "group" and attribute.i != 1 for attribute in conv.attribute)
        if conv.op_type != "Conv" or grouped or len(conv.input) != 3 or conv.output[0] in outputs:
            continue
        after = readers.get(conv.output[0], [])
        if len(after) != 1 or after[0].op_type != "QuantizeLinear" or after[0].attribute or after[0].output[0] in outputs:
            continue
        quantize = after[0]
        if quantize.input[1] not in constants or _scalar(constants[quantize.input[1]]) is None:
            continue  # per-channel output scales would need padding too
        dequantizers = [producers.get(name) for name in conv.input[1:]]
        if any(node is None or node.op_type != "DequantizeLinear" or len(readers[node.output[0]]) != 1
               for node in dequantizers):
            continue
        names = [name for node in dequantizers if node is not None for name in node.input]
        if any(name not in constants or len(readers.get(name, [])) != 1 for name in names):
            continue
        arrays = {name: numpy_helper.to_array(constants[name]) for name in names}
        channels = arrays[names[0]].shape[0]
        if channels % multiple == 0 or any(array.ndim and array.shape[0] != channels for array in arrays.values()):
            continue
        extra = -channels % multiple
        for name, array in arrays.items():
            if array.ndim == 0:  # a per-tensor scale or zero point serves the new channels as it is
                continue
            # zero weights, bias and zero points; the scales repeat the first channel's (never zero)
            fill = array[:1] if array.dtype.kind == "f" else np.zeros((1, *array.shape[1:]), array.dtype)
            grown = np.concatenate([array, np.repeat(fill, extra, axis=0)])
            constants[name].CopyFrom(numpy_helper.from_array(grown, name))
        kept = quantize.output[0] + "_channels"
        bounds = [(f"{kept}_{key}", value) for key, value in (("starts", 0), ("ends", channels), ("axes", 1))]
        graph.initializer.extend(numpy_helper.from_array(np.array([value], np.int64), name) for name, value in bounds)
        _rename_input(readers.get(quantize.output[0], []), quantize.output[0], kept)
        graph.node.insert(list(graph.node).index(quantize) + 1, helper.make_node(
            "Slice", [quantize.output[0], *(name for name, _ in bounds)], [kept], name=kept))
        stale = {conv.output[0], quantize.output[0], *(node.output[0] for node in dequantizers if node is not None)}
        for info in [info for info in graph.value_info if info.name in stale]:
            graph.value_info.remove(info)  # shapes with the old channel count; ONNX Runtime infers them again
        padded += 1
    return padded
