"""An ONNX graph run by PyTorch: the float model's own weights and nodes, interpreted op by op.

The PyTorch backend (``engines.torch_backend``) builds its network from the same ``NAME.onnx`` file the CPU
engine runs, so there is one source of truth for weights and wiring. Only the small op set that restoration
models of this project's interface use is supported; any other op is refused when the graph is read, naming
the op and the node, never at run time. Shapes are dynamic (any batch and frame size); everything that is
not the image itself (Slice bounds, Clip limits, Reshape shapes) must be a constant, so that the forward pass
is a fixed sequence of kernels that a CUDA graph can capture.

Needs ``torch`` and ``onnx``: import this module lazily (the PyTorch backend does, when it activates).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from engines.base import EngineError

SUPPORTED_OPS = (
    "Add",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "DepthToSpace",
    "Identity",
    "LeakyRelu",
    "Mul",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Sigmoid",
    "Slice",
    "SpaceToDepth",
    "Sub",
    "Transpose",
)

Step = Callable[[list[Any]], Any]  # tensors of the node's inputs (None for a missing optional one) -> output


def _attributes(node: Any) -> dict[str, Any]:
    return {attr.name: onnx.helper.get_attribute_value(attr) for attr in node.attribute}


def unsupported_ops(model: Any) -> list[str]:
    """One ``op xCOUNT (first node)`` entry per op type of ``model``'s main graph that this interpreter cannot run."""
    found: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type not in SUPPORTED_OPS or node.domain not in ("", "ai.onnx"):
            op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            found.setdefault(op, []).append(node.name or node.output[0])
    return [f"{op} x{len(names)} (first: {names[0]})" for op, names in found.items()]


DATA_ONLY_FIRST = ("Clip", "ReduceMean", "Reshape", "Slice")  # ops whose other inputs are constant arguments, not data


def build_module(model: Any) -> GraphModule:
    """A module computing ``model``'s graph (its inputs in graph order, one tensor each; one output, or a tuple
    for several, such as a recurrent model's ``restored`` and ``next_state``); float32 on the CPU until moved
    with ``.to()``. Raises ``EngineError`` naming any op or non-constant argument it cannot handle."""
    graph = model.graph
    bad = unsupported_ops(model)
    if bad:
        raise EngineError(
            f"the PyTorch backend cannot run op(s) {', '.join(bad)}; it supports {', '.join(SUPPORTED_OPS)} "
            "(give it the float model NAME.onnx, not an int8 twin)"
        )
    if graph.sparse_initializer:
        raise EngineError("the PyTorch backend cannot run models with sparse initializers")
    constants: dict[str, np.ndarray] = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            attrs = _attributes(node)
            if "value" not in attrs:
                raise EngineError(f"Constant node {node.name or node.output[0]}: only 'value' constants are supported")
            constants[node.output[0]] = numpy_helper.to_array(attrs["value"])
    inputs = [item.name for item in graph.input if item.name not in constants]
    if not inputs or not graph.output:
        raise EngineError(f"the PyTorch backend needs inputs and outputs, got {inputs} -> {len(graph.output)}")
    return GraphModule(graph, constants, inputs, [item.name for item in graph.output])


def _static(constants: dict[str, np.ndarray], node: Any, index: int, what: str) -> np.ndarray | None:
    """The constant value of the node's ``index``-th input (None when the optional input is absent)."""
    if index >= len(node.input) or node.input[index] == "":
        return None
    name = node.input[index]
    if name not in constants:
        raise EngineError(f"{node.op_type} node {node.name or node.output[0]}: {what} must be a constant ({name!r} is computed)")
    return constants[name]


def _depth_to_space(x: Any, block: int, mode: str) -> Any:
    if mode == "CRD":
        return nn.functional.pixel_shuffle(x, block)
    batch, channels, height, width = x.shape
    depth = channels // (block * block)
    x = x.reshape(batch, block, block, depth, height, width).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(batch, depth, height * block, width * block)


def _space_to_depth(x: Any, block: int) -> Any:
    batch, channels, height, width = x.shape
    x = x.reshape(batch, channels, height // block, block, width // block, block).permute(0, 3, 5, 1, 2, 4)
    return x.reshape(batch, channels * block * block, height // block, width // block)


class _Builder:
    """Turns each ONNX node into a closure over constant arguments (decided once, at build time)."""

    def __init__(self, constants: dict[str, np.ndarray]) -> None:
        self.functional = nn.functional
        self.constants = constants

    def step(self, node: Any) -> Step:
        attrs = _attributes(node)
        method = getattr(self, f"_{node.op_type.lower()}")
        step: Step = method(node, attrs)
        return step

    def _identity(self, node: Any, attrs: dict[str, Any]) -> Step:
        return lambda args: args[0]

    def _relu(self, node: Any, attrs: dict[str, Any]) -> Step:
        return lambda args: torch.relu(args[0])

    def _sigmoid(self, node: Any, attrs: dict[str, Any]) -> Step:
        return lambda args: torch.sigmoid(args[0])

    def _leakyrelu(self, node: Any, attrs: dict[str, Any]) -> Step:
        slope = float(attrs.get("alpha", 0.01))
        return lambda args: self.functional.leaky_relu(args[0], slope)

    def _add(self, node: Any, attrs: dict[str, Any]) -> Step:
        return lambda args: args[0] + args[1]

    def _sub(self, node: Any, attrs: dict[str, Any]) -> Step:
        return lambda args: args[0] - args[1]

    def _mul(self, node: Any, attrs: dict[str, Any]) -> Step:
        return lambda args: args[0] * args[1]

    def _clip(self, node: Any, attrs: dict[str, Any]) -> Step:
        low = _static(self.constants, node, 1, "min")
        high = _static(self.constants, node, 2, "max")
        lower = float(low) if low is not None else attrs.get("min")
        upper = float(high) if high is not None else attrs.get("max")
        return lambda args: torch.clamp(args[0], lower, upper)

    def _conv(self, node: Any, attrs: dict[str, Any]) -> Step:
        name = node.name or node.output[0]
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise EngineError(f"Conv node {name}: auto_pad is not supported (export with explicit pads)")
        if _static(self.constants, node, 1, "the weight") is None:
            raise EngineError(f"Conv node {name}: no weight")
        if len(self.constants[node.input[1]].shape) != 4:
            raise EngineError(f"Conv node {name}: only 2-D convolutions are supported")
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        top, left, bottom, right = pads
        symmetric = top == bottom and left == right
        stride = tuple(attrs.get("strides", [1, 1]))
        dilation = tuple(attrs.get("dilations", [1, 1]))
        groups = int(attrs.get("group", 1))
        padding = (top, left) if symmetric else (0, 0)

        def conv(args: list[Any]) -> Any:
            x, weight, bias = args[0], args[1], args[2] if len(args) > 2 else None
            if not symmetric:
                x = self.functional.pad(x, (left, right, top, bottom))
            return self.functional.conv2d(x, weight, bias, stride, padding, dilation, groups)

        return conv

    def _slice(self, node: Any, attrs: dict[str, Any]) -> Step:
        starts = _static(self.constants, node, 1, "starts")
        ends = _static(self.constants, node, 2, "ends")
        axes = _static(self.constants, node, 3, "axes")
        steps = _static(self.constants, node, 4, "steps")
        if starts is None or ends is None:
            raise EngineError(f"Slice node {node.name or node.output[0]}: needs starts and ends (opset >= 10)")
        axes_list = [int(a) for a in (axes if axes is not None else range(len(starts)))]
        steps_list = [int(s) for s in (steps if steps is not None else [1] * len(starts))]
        if any(step <= 0 for step in steps_list):
            raise EngineError(f"Slice node {node.name or node.output[0]}: only positive steps are supported")
        ranges = list(zip(axes_list, (int(s) for s in starts), (int(e) for e in ends), steps_list, strict=True))

        def slice_(args: list[Any]) -> Any:
            index: list[Any] = [slice(None)] * args[0].dim()
            for axis, start, end, step in ranges:
                index[axis] = slice(start, end, step)
            return args[0][tuple(index)]

        return slice_

    def _concat(self, node: Any, attrs: dict[str, Any]) -> Step:
        axis = int(attrs["axis"])
        return lambda args: torch.cat(args, dim=axis)

    def _depthtospace(self, node: Any, attrs: dict[str, Any]) -> Step:
        block = int(attrs["blocksize"])
        mode = attrs.get("mode", b"DCR")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        return lambda args: _depth_to_space(args[0], block, mode)

    def _spacetodepth(self, node: Any, attrs: dict[str, Any]) -> Step:
        block = int(attrs["blocksize"])
        return lambda args: _space_to_depth(args[0], block)

    def _reducemean(self, node: Any, attrs: dict[str, Any]) -> Step:
        """Axes as an attribute (opset < 18) or a constant second input (18+); all axes when none are given."""
        axes = attrs.get("axes")
        given = _static(self.constants, node, 1, "axes")
        if given is not None:
            axes = given
        keep = bool(attrs.get("keepdims", 1))
        if axes is None or len(axes) == 0:
            if attrs.get("noop_with_empty_axes", 0):
                return lambda args: args[0]
            return lambda args: args[0].mean(dim=tuple(range(args[0].dim())), keepdim=keep)
        dims = tuple(int(axis) for axis in axes)
        return lambda args: args[0].mean(dim=dims, keepdim=keep)

    def _reshape(self, node: Any, attrs: dict[str, Any]) -> Step:
        target = _static(self.constants, node, 1, "the shape")
        if target is None:
            raise EngineError(f"Reshape node {node.name or node.output[0]}: no shape")
        spec = [int(value) for value in target]
        keep_zero = bool(attrs.get("allowzero", 0))

        def reshape(args: list[Any]) -> Any:
            shape = [args[0].shape[i] if value == 0 and not keep_zero else value for i, value in enumerate(spec)]
            return args[0].reshape(shape)

        return reshape

    def _transpose(self, node: Any, attrs: dict[str, Any]) -> Step:
        perm = attrs.get("perm")
        if perm is None:
            return lambda args: args[0].permute(*reversed(range(args[0].dim())))
        order = [int(axis) for axis in perm]
        return lambda args: args[0].permute(*order)

    def _constant(self, node: Any, attrs: dict[str, Any]) -> Step:
        return lambda args: None  # its value was folded into ``constants`` when the graph was read


class GraphModule(nn.Module):
    """The interpreted graph: constants as buffers (so ``.to(device, dtype)`` moves them), nodes as closures."""

    def __init__(self, graph: Any, constants: dict[str, np.ndarray], input_names: list[str], output_names: list[str]) -> None:
        super().__init__()
        builder = _Builder(constants)
        self._tensors: dict[str, str] = {}  # ONNX name -> buffer attribute
        for index, (name, value) in enumerate(sorted(constants.items())):
            if value.dtype.kind == "f":
                self.register_buffer(f"c{index}", torch.from_numpy(np.array(value, dtype=np.float32)))
                self._tensors[name] = f"c{index}"
        known = set(input_names) | set(constants)
        self._steps: list[tuple[Step, list[str], str]] = []
        for node in graph.node:
            if node.op_type == "Constant":
                continue
            data = node.input[:1] if node.op_type in DATA_ONLY_FIRST else node.input
            for name in data:
                where = f"{node.op_type} node {node.name or node.output[0]}"
                if name and name not in known:
                    raise EngineError(f"{where}: input {name!r} is not computed before it (graph not sorted?)")
                if name in constants and name not in self._tensors:
                    raise EngineError(f"{where}: non-float constant {name!r} used as data is not supported")
            self._steps.append((builder.step(node), list(node.input), node.output[0]))
            known.add(node.output[0])
        for name in output_names:
            if name not in known:
                raise EngineError(f"the graph never computes its output {name!r}")
        self.input_names = input_names
        self.output_names = output_names

    def forward(self, *inputs: torch.Tensor) -> Any:
        """The graph's output for one tensor per input; a tuple where the graph has several outputs."""
        if len(inputs) != len(self.input_names):
            raise EngineError(f"the model takes {len(self.input_names)} input(s) {self.input_names}, got {len(inputs)}")
        values: dict[str, Any] = dict(zip(self.input_names, inputs, strict=True))
        for step, names, output in self._steps:
            values[output] = step([self._value(values, name) for name in names])
        results = tuple(values[name] for name in self.output_names)
        return results[0] if len(results) == 1 else results

    def _value(self, values: dict[str, Any], name: str) -> Any:
        if name == "":
            return None
        if name in values:
            return values[name]
        buffer = self._tensors.get(name)
        return None if buffer is None else getattr(self, buffer)  # integer constants were folded at build time
