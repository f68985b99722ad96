"""Quantisation-aware fine-tuning support: simulate in torch what ``tools/quantize.py`` does in ONNX Runtime.

``tools/quantize.py`` runs the body's convolutions in int8 (weights per output channel, symmetric; activations
per tensor, uint8) and keeps the reference path and the residual tail in float. Training with the same rounding
in the forward pass (straight-through gradients) lets the weights settle where int8 costs little, so the CPU's
int8 model loses less against the float one. Activation ranges are calibrated once, like the ONNX Runtime
MinMax calibrator does, and then kept fixed. The residual (the last convolution's output) can instead be given a
fixed range ``[-R, R]`` (``residual_range``, ``tools/quantize.py --residual-range``): its calibrated range is set
by the largest noise residuals, so a narrower one rounds every frame finer and saturates only the rare extremes,
which the fine-tune learns to live with.

    simulation = QuantSimulation(model)
    simulation.calibrate(model, batches)   # observe activation ranges (no rounding)
    ... train with rounding on ...
    plain_state_dict(model)                 # float weights, loadable by an unwrapped model / the exporter
    simulation.remove()
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from engines.arch import WindowRestorer

INT8_MIN, INT8_MAX = -127, 127  # ONNX Runtime keeps symmetric int8 weights in [-127, 127]
UINT8_MAX = 255


def residual_range_argument(text: str) -> float:
    """argparse type of ``--residual-range`` (tools/quantize.py) and ``--qat-residual-range`` (tools/train.py)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive range, got {text}")
    return value


def fake_quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8, as ONNX Runtime's QInt8 per-channel weights (scale = absmax / 127)."""
    absmax = weight.detach().abs().amax(dim=tuple(range(1, weight.dim()))).clamp_min(1e-8)
    scale = (absmax / INT8_MAX).float()
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, INT8_MIN, INT8_MAX)


class WeightFakeQuant(nn.Module):
    """Parametrisation that rounds a convolution's weight to int8 in the forward pass (while ``enabled``)."""

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quantize_weight(weight) if self.enabled else weight


class ActivationFakeQuant:
    """Per-tensor uint8 rounding of one activation; observes its range until frozen (MinMax, like ORT), unless
    given a ``fixed`` range, which calibration leaves alone. Values outside the range saturate."""

    def __init__(self, fixed: tuple[float, float] | None = None) -> None:
        self.fixed = fixed
        self.low, self.high = fixed if fixed is not None else (0.0, 0.0)
        self.observing = fixed is None

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.low = min(self.low, float(tensor.detach().min()))
            self.high = max(self.high, float(tensor.detach().max()))
            return tensor
        if self.high <= self.low:  # never observed
            return tensor
        scale = (self.high - self.low) / UINT8_MAX
        zero = round(-self.low / scale)
        return torch.fake_quantize_per_tensor_affine(tensor, scale, zero, 0, UINT8_MAX)

    def state(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high}


class QuantSimulation:
    """Fake-quantises the body of a :class:`WindowRestorer` the way ``tools/quantize.py`` quantises its ONNX graph.

    Rounded: every body convolution's weight, the input of every body convolution after the first (the first
    reads the frames, which are exact in uint8) and the output of the last one (the residual before the float
    addition; in ``[-residual_range, residual_range]`` when given, else calibrated). Left in float: the
    reference path and the tail.
    """

    def __init__(self, model: WindowRestorer, residual_range: float | None = None) -> None:
        if residual_range is not None and not residual_range > 0:
            raise ValueError(f"residual_range must be positive, got {residual_range}")
        body = [module for module in model.body if isinstance(module, nn.Conv2d)]
        detail = [] if model.detail is None else model.detail.convs()
        context = [] if model.context is None else model.context.convs()
        self.convs = body + detail + context
        # Rounded inputs: every body conv's after the first (which reads the exact frames), every detail conv's.
        self.inputs = [ActivationFakeQuant() for _ in body[1:]]
        self.detail_inputs = [ActivationFakeQuant() for _ in detail]
        fixed = None if residual_range is None else (-residual_range, residual_range)
        self.output = ActivationFakeQuant(fixed)
        self.detail_output = ActivationFakeQuant() if detail else None
        # ONNX Runtime also rounds the inlet's (ReLU) output: the concatenation after it stays in float
        self.detail_inlet_output = ActivationFakeQuant() if detail else None
        # a context path's convolutions: every input, the 1/8-resolution decoder's output (added to the skip in
        # float), the trunk's middle output (added to the path's in float, where a plain trunk has a ReLU) and the
        # path's output, as ONNX Runtime rounds them
        self.context_inputs = [ActivationFakeQuant() for _ in context]
        self.context_outputs = [ActivationFakeQuant() for _ in context_outputs(model)]
        self.weights = [WeightFakeQuant() for _ in self.convs]
        self._handles: list[Any] = []
        for conv, rounding in zip(self.convs, self.weights, strict=True):
            parametrize.register_parametrization(conv, "weight", rounding)
        for conv, quantizer in zip(body[1:] + detail, self.inputs + self.detail_inputs, strict=True):
            self._handles.append(conv.register_forward_pre_hook(_input_hook(quantizer)))
        self._handles.append(body[-1].register_forward_hook(_output_hook(self.output)))
        if model.detail is not None and self.detail_output is not None and self.detail_inlet_output is not None:
            self._handles.append(detail[-1].register_forward_hook(_output_hook(self.detail_output)))
            inlet_relu = model.detail.inlet_relu
            self._handles.append(inlet_relu.register_forward_hook(_output_hook(self.detail_inlet_output)))
        if model.context is not None:
            # down2's input also feeds the skip: rounded where it is made, for both readers
            down2 = self.context_inputs[1]
            self._handles.append(model.context.quarter_relu.register_forward_hook(_output_hook(down2)))
        for conv, quantizer in zip(context, self.context_inputs, strict=True):
            if conv is not context[1]:
                self._handles.append(conv.register_forward_pre_hook(_input_hook(quantizer)))
        for module, quantizer in zip(context_outputs(model), self.context_outputs, strict=True):
            self._handles.append(module.register_forward_hook(_output_hook(quantizer)))

    @property
    def activations(self) -> list[ActivationFakeQuant]:
        """In ``tools/quantize.activation_tensors`` order: body inputs, residual, then (when the model has a detail
        path) the inlet's input and output, the other detail convs' inputs and the path's output, then (when it has
        a context path) the inputs of its convs in order and the outputs ``context_outputs`` lists."""
        detail: list[ActivationFakeQuant] = []
        if self.detail_output is not None and self.detail_inlet_output is not None:
            first, *rest = self.detail_inputs
            detail = [first, self.detail_inlet_output, *rest, self.detail_output]
        return [*self.inputs, self.output, *detail, *self.context_inputs, *self.context_outputs]

    @torch.no_grad()
    def calibrate(self, model: WindowRestorer, batches: Iterable[torch.Tensor]) -> None:
        """Observe activation ranges over ``batches`` (model inputs) with float weights, as ONNX Runtime's
        calibrator does on the float model; then freeze them and start rounding. Fixed ranges stay as they are."""
        observed = [quantizer for quantizer in self.activations if quantizer.fixed is None]
        for quantizer in observed:
            quantizer.observing, quantizer.low, quantizer.high = True, 0.0, 0.0
        for rounding in self.weights:
            rounding.enabled = False
        was_training = model.training
        model.eval()
        for batch in batches:
            model(batch)
        model.train(was_training)
        for quantizer in observed:
            quantizer.observing = False
        for rounding in self.weights:
            rounding.enabled = True

    def ranges(self) -> list[dict[str, float]]:
        return [quantizer.state() for quantizer in self.activations]

    def load_ranges(self, ranges: list[dict[str, float]]) -> None:
        """Restore saved ranges (a resumed run's); a fixed range must match the saved one."""
        for quantizer, values in zip(self.activations, ranges, strict=True):
            if quantizer.fixed is not None and quantizer.fixed != (values["low"], values["high"]):
                raise ValueError(f"saved range {values} differs from the fixed range {quantizer.fixed}")
            quantizer.low, quantizer.high, quantizer.observing = values["low"], values["high"], False

    def remove(self) -> None:
        """Drop the hooks and parametrisations, keeping the float (unrounded) weights. Idempotent."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for conv in self.convs:
            if parametrize.is_parametrized(conv, "weight"):
                parametrize.remove_parametrizations(conv, "weight", leave_parametrized=False)


def context_outputs(model: WindowRestorer) -> list[nn.Conv2d]:
    """The convolutions whose outputs ONNX Runtime rounds besides the inputs of the next ones, with a context path:
    its decoder's first (``up``), the trunk's middle one (whose output is added to the path's) and the path's last
    (``out``). Empty without a context path."""
    if model.context is None:
        return []
    middle = model.body[2 * (model.config.depth // 2)]  # (a context path needs depth >= 2)
    return [model.context.up, middle, model.context.out]  # type: ignore[list-item]


def _input_hook(quantizer: ActivationFakeQuant) -> Any:
    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (quantizer(args[0]), *args[1:])

    return hook


def _output_hook(quantizer: ActivationFakeQuant) -> Any:
    def hook(_module: nn.Module, _args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        return quantizer(output)

    return hook


PARAMETRISED_WEIGHT = "parametrizations.weight.original"


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state with parametrised weights under their plain names (the float weights, not rounded)."""
    return {key.replace(PARAMETRISED_WEIGHT, "weight"): value for key, value in model.state_dict().items()}


def load_plain_state_dict(model: nn.Module, plain: dict[str, torch.Tensor]) -> None:
    """Load plain weights (a checkpoint's) into ``model``, whether or not its weights carry the rounding."""
    names = set(model.state_dict())
    model.load_state_dict(
        {
            key if key in names else key.replace("weight", PARAMETRISED_WEIGHT): value
            for key, value in plain.items()
        }
    )


def checkpoint_weights(model: nn.Module, simulation: QuantSimulation | None) -> dict[str, Any]:
    """A training checkpoint's weights: the plain float weights, and the activation ranges when QAT rounds."""
    return {"model": plain_state_dict(model), "qat_ranges": simulation.ranges() if simulation is not None else None}


def load_checkpoint_weights(
    model: nn.Module, simulation: QuantSimulation | None, saved: dict[str, Any], path: Path
) -> None:
    """Resume ``checkpoint_weights`` read from ``path``: a QAT run needs a QAT checkpoint with matching ranges."""
    load_plain_state_dict(model, saved["model"])
    if simulation is None:
        return
    if not saved.get("qat_ranges"):
        raise SystemExit(f"{path} was not trained with --qat: use a new --out")
    try:
        simulation.load_ranges(saved["qat_ranges"])
    except ValueError as error:
        raise SystemExit(f"{path}: --qat-residual-range: {error}") from None


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` through a temporary file, so a run killed mid-write keeps its last checkpoint."""
    partial = path.with_name(path.name + ".tmp")
    torch.save(state, partial)
    partial.replace(path)
