"""Restoration network family shared by every model size (torch is needed only for training/export).

One forward pass per output frame over a temporal window of N RGB frames:

    frames [B, N*3, H, W]  (oldest first, values in [0, 1])
      -> PixelUnshuffle(u)                      (each frame's 3 channels -> 3*u*u channels at 1/u res)
      -> conv(k_in x k_in, N*3*u*u -> C) + ReLU (early fusion of the whole window)
      -> depth x [conv3x3(C -> C) + ReLU]
      -> conv3x3(C -> 3*u*u)
      -> PixelShuffle(u)                        (back to full resolution, a residual image)
      -> + reference frame, clamp to [0, 1]     -> restored [B, 3, H, W]

Only Conv, ReLU, Reshape/Transpose (Space/DepthToSpace), Add, Clip and Slice are used, so the graph exports to
ONNX opset 17 and builds in TensorRT fp16 without plugins. The reference frame is the window centre (N // 2) for
centred windows or the last frame (N - 1) for causal windows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from engines.arch_context import ContextPath


@dataclass(frozen=True)
class ArchConfig:
    """Hyper-parameters that define one model size."""

    name: str = "lite"
    window: int = 5
    reference_index: int = 2
    unshuffle: int = 4
    width: int = 48
    depth: int = 4
    first_kernel: int = 1
    # Half-resolution detail path (0 = none): channels and hidden 3x3 layers; see WindowRestorer.
    detail_width: int = 0
    detail_depth: int = 2
    # Low-resolution context path (0 = none): channels and 3x3 layers at 1/8 of the frame (engines/arch_context.py)
    context_width: int = 0
    context_depth: int = 2
    # 1 = recurrent: a running estimate of the reference frame (``state``) goes from each frame to the next;
    # 2 = recurrent with the restored frame as the state (EMVD's recursion: the output is fed back)
    recurrent: int = 0
    # 1 = the recurrent gate also sees a frame-wide cue: the mean of its features over the whole frame (how noisy
    # or how coded the video is), which a 12-pixel view cannot tell apart from motion; see RecurrentGate
    gate_context: int = 0
    # > 1: the output is this many times the input's size (engines/arch_sr.py's UpscalingRestorer)
    scale: int = 1

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)

    def pad_multiple(self) -> int:
        """What frame sizes must be a multiple of: the space-to-depth factor, 4x it with a context path."""
        return self.unshuffle * (4 if self.context_width else 1)

    @staticmethod
    def from_dict(values: dict[str, int | str]) -> ArchConfig:
        return ArchConfig(**values)  # type: ignore[arg-type]


PRESETS: dict[str, ArchConfig] = {
    "lite": ArchConfig(name="lite", unshuffle=4, width=64, depth=4, first_kernel=1),
    "base": ArchConfig(name="base", unshuffle=2, width=48, depth=5, first_kernel=3),
    "tiny": ArchConfig(name="tiny", unshuffle=4, width=8, depth=1, first_kernel=1),
    "detail": ArchConfig(name="detail", unshuffle=4, width=64, depth=4, first_kernel=1, detail_width=32),
    # lite's design at x2 space-to-depth and half its width: about lite's MACs, a finer trunk (model card)
    "fine": ArchConfig(name="lite-fine", unshuffle=2, width=32, depth=4, first_kernel=1),
    # the same trunk at 1.5x the width: about lite-detail's MACs and quality, less of its time (model card)
    "fine-wide": ArchConfig(name="lite-fine-wide", unshuffle=2, width=48, depth=4, first_kernel=1),
    # fine-wide with a low-resolution context path (engines/arch_context.py)
    "fine-context": ArchConfig(
        name="lite-fine-context", unshuffle=2, width=48, depth=4, first_kernel=1, context_width=64
    ),
    # x2 super-resolution (engines/arch_sr.py): lite's trunk at 1/2 of the input, i.e. 1/4 of the output
    "sr2": ArchConfig(name="lite-sr2", unshuffle=2, width=64, depth=4, first_kernel=1, scale=2),
}


def preset(name: str, causal: bool = False, window: int = 5, recurrent: bool = False) -> ArchConfig:
    """Return a named configuration; ``causal`` restores the newest frame instead of the centre one;
    ``recurrent`` adds a running estimate of the reference frame carried from call to call (``state``)."""
    reference = window - 1 if causal else window // 2
    return replace(PRESETS[name], window=window, reference_index=reference, recurrent=int(recurrent))


def he_init(modules: Iterable[nn.Module]) -> list[nn.Conv2d]:
    """He (fan-in, ReLU) weights and zero biases for the convolutions among ``modules``; returns them in order."""
    convs = [module for module in modules if isinstance(module, nn.Conv2d)]
    for conv in convs:
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
    return convs


GATE_START = -4.0  # a recurrent gate's bias at initialisation: sigmoid(-4) = 0.018 of the state


class WindowRestorer(nn.Module):
    """Early-fusion residual restorer operating on a PixelUnshuffled temporal window."""

    def __init__(self, config: ArchConfig, widths: list[int] | None = None) -> None:
        super().__init__()
        if not 0 <= config.reference_index < config.window:
            raise ValueError("reference_index must lie inside the window")
        self.config = config
        unshuffled = 3 * config.unshuffle * config.unshuffle
        # ``widths`` lets a pruned model use a different channel count per hidden layer.
        hidden = widths if widths is not None else [config.width] * (config.depth + 1)
        if len(hidden) != config.depth + 1:
            raise ValueError("widths must have depth + 1 entries")
        self.hidden_widths = list(hidden)
        self.unshuffle = nn.PixelUnshuffle(config.unshuffle)
        self.shuffle = nn.PixelShuffle(config.unshuffle)
        layers: list[nn.Module] = [
            nn.Conv2d(
                config.window * unshuffled, hidden[0], config.first_kernel, padding=config.first_kernel // 2
            ),
            nn.ReLU(inplace=True),
        ]
        for index in range(config.depth):
            layers += [nn.Conv2d(hidden[index], hidden[index + 1], 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(hidden[-1], unshuffled, 3, padding=1))
        self.body = nn.Sequential(*layers)
        # Linear 1x1 path from the reference frame's unshuffled pixels into the residual. It starts at -identity
        # (so reference + residual begins as a direct prediction) and lets the net learn how much of the noisy
        # reference to keep; without it the 48-channel x4 bottleneck must carry the reference noise through
        # the ReLU stack, and training stalls (measured: +0.1 dB vs +4.5 dB after 300 steps at sigma 25).
        self.reference_skip = nn.Conv2d(unshuffled, unshuffled, 1, bias=False)
        # Recurrent models carry a running estimate of the reference frame from frame to frame (``state``): a
        # small gate at 1/u resolution compares the new reference frame with it and blends them,
        # estimate = reference + g * (state - reference), a recursive average that keeps every pixel's detail and
        # integrates still parts of the scene over many frames while letting go where things move (EMVD's
        # fusion, without alignment). The trunk then restores from that estimate (its skip path and its residual)
        # and sees it beside the window (``state_fusion``); the estimate is the next frame's state. The gate
        # starts nearly closed (sigmoid(GATE_START)) and the state's fusion weights at zero, so a trained window
        # model grown into a recurrent one starts where it was. With ``recurrent=2`` the state is the restored
        # frame instead (EMVD's recursion): the gate then compares the new frame with a clean one, where only
        # noise and motion differ, and a still background keeps what the trunk made of it.
        self.state_fusion: nn.Conv2d | None = None
        self.gate: RecurrentGate | None = None
        if config.recurrent:
            if config.first_kernel != 1:
                raise ValueError("a recurrent model needs first_kernel 1")
            self.state_fusion = nn.Conv2d(unshuffled, hidden[0], 1, bias=False)
            self.gate = RecurrentGate(config.unshuffle, context=bool(config.gate_context))
        self.detail: DetailPath | None = None
        if config.detail_width > 0:
            if hidden[-1] % 4:
                raise ValueError("the detail path needs a last hidden width divisible by 4")
            self.detail = DetailPath(hidden[-1] // 4, config.detail_width, config.detail_depth)
        self.context: ContextPath | None = None
        if config.context_width > 0:
            if len(set(hidden)) != 1 or config.depth < 2:
                raise ValueError("the context path needs one hidden width and at least 2 hidden layers")
            self.context = ContextPath(hidden[0], config.context_width, config.context_depth)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He init for the ReLU stack (PyTorch's default shrinks activations layer by layer); small last layer."""
        convs = he_init(self.body)
        with torch.no_grad():
            convs[-1].weight.mul_(0.1)
            eye = torch.eye(self.reference_skip.in_channels)
            self.reference_skip.weight.copy_(-eye[:, :, None, None])
        if self.detail is not None:
            self.detail.reset_parameters()
        if self.context is not None:
            self.context.reset_parameters()
        if self.state_fusion is not None and self.gate is not None:
            nn.init.zeros_(self.state_fusion.weight)
            self.gate.reset_parameters()

    def forward(self, frames: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """The restored reference frame; ``state`` is a recurrent model's running estimate (``step``)."""
        return self.step(frames, state)[0]

    def step(self, frames: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(restored frame, next state). A recurrent model's ``state`` is the previous call's next state [B, 3, H,
        W]; None (a stream's first frame, or after a gap) means the reference frame. The next state is the blended
        estimate (``recurrent=1``) or the restored frame (``recurrent=2``); a window model ignores ``state`` and
        returns its reference frame as the next state."""
        batch, _channels, height, width = frames.shape
        factor = self.config.unshuffle
        start = 3 * self.config.reference_index
        reference = frames[:, start : start + 3]
        if self.gate is not None:
            reference = self.gate(reference, reference if state is None else state)
        # A 1x1 conv after a per-frame PixelUnshuffle(u) equals a u x u conv with stride u on the raw frames (the
        # weights are only reshaped), which avoids a full-resolution 6-D transpose at inference time.
        skip_weight = self.reference_skip.weight.reshape(self.reference_skip.out_channels, 3, factor, factor)
        skip = nn.functional.conv2d(reference, skip_weight, stride=factor)
        first = self.body[0]
        assert isinstance(first, nn.Conv2d)
        if first.kernel_size == (1, 1):
            weight = first.weight.reshape(first.out_channels, -1, factor, factor)
            fused = nn.functional.conv2d(frames, weight, first.bias, stride=factor)
        else:
            # Unshuffle each frame separately so every frame keeps its own group of 3*u*u channels.
            stacked = frames.reshape(batch * self.config.window, 3, height, width)
            unshuffled = self.unshuffle(stacked)
            fused = first(unshuffled.reshape(batch, -1, unshuffled.shape[-2], unshuffled.shape[-1]))
        if self.state_fusion is not None:
            fusion_weight = self.state_fusion.weight.reshape(self.state_fusion.out_channels, 3, factor, factor)
            fused = fused + nn.functional.conv2d(reference, fusion_weight, stride=factor)
        if self.context is None:
            features = self.body[1:-1](fused)  # the last hidden layer's (ReLU) output
        else:
            # the context path reads the first layer's features and adds to the middle layer's, before its ReLU
            activated = self.body[1](fused)
            middle = 2 * (self.config.depth // 2) + 1
            hidden = self.body[2:middle](activated) + self.context(activated)
            features = self.body[middle:-1](hidden)
        base = reference + self.shuffle(self.body[-1](features) + skip)
        if self.detail is not None:
            base = base + self.detail(reference, base, features)
        restored = torch.clamp(base, 0.0, 1.0)
        return restored, restored if self.config.recurrent == 2 else reference


class RecurrentGate(nn.Module):
    """Blends a new reference frame into the running estimate: reference + g * (state - reference), g in (0, 1)
    per pixel from a 4x4 stride-u conv of both (and of their difference, which is what shows motion) and a 3x3
    conv at 1/u resolution, lifted back by PixelShuffle(u). With ``context`` the features also get a frame-wide
    cue, a 1x1 conv of their mean over the whole frame (ReduceMean), so the blend can depend on what kind of
    degradation the frame carries (sensor noise averages out over time, coding artefacts do not); it starts at
    zero, so a gate grown into one computes what it did."""

    def __init__(self, factor: int, width: int = 16, context: bool = False) -> None:
        super().__init__()
        self.inlet = nn.Conv2d(9, width, factor, stride=factor)
        self.relu = nn.ReLU()
        self.context = nn.Conv2d(width, width, 1) if context else None
        self.out = nn.Conv2d(width, factor * factor, 3, padding=1)
        self.shuffle = nn.PixelShuffle(factor)

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.inlet.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():  # all convs have biases (the default)
            self.inlet.bias.zero_()  # type: ignore[union-attr]
            self.out.bias.fill_(GATE_START)  # type: ignore[union-attr]
            if self.context is not None:
                self.context.weight.zero_()
                self.context.bias.zero_()  # type: ignore[union-attr]

    def forward(self, reference: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        difference = state - reference
        hidden = self.relu(self.inlet(torch.cat([reference, state, difference], dim=1)))
        if self.context is not None:
            hidden = self.relu(hidden + self.context(hidden.mean(dim=(2, 3), keepdim=True)))
        gate = torch.sigmoid(self.shuffle(self.out(hidden)))  # [B, 1, H, W]
        return reference + gate * difference


class DetailPath(nn.Module):
    """Half-resolution refinement that puts back the fine structure the x4 trunk cannot carry.

    Reads the full-resolution reference frame and the trunk's restored frame (a 4x4 stride-2 conv: a 2x2 block
    plus a one-pixel border per position) and the trunk's last hidden features brought to half resolution by
    PixelShuffle(2) (context from the whole window), and adds a residual through PixelShuffle(2). Its last conv
    starts at zero, so a trunk trained without it keeps its output exactly when the path is added (warm start).
    """

    def __init__(self, feature_channels: int, width: int, depth: int) -> None:
        super().__init__()
        self.inlet = nn.Conv2d(6, width, 4, stride=2, padding=1)
        self.inlet_relu = nn.ReLU()
        self.lift = nn.PixelShuffle(2)
        layers: list[nn.Module] = [
            nn.Conv2d(width + feature_channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
        ]
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, 12, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.shuffle = nn.PixelShuffle(2)

    def convs(self) -> list[nn.Conv2d]:
        """The path's convolutions in order (inlet first, output last)."""
        return [self.inlet, *(m for m in self.body if isinstance(m, nn.Conv2d))]

    def reset_parameters(self) -> None:
        convs = he_init(self.convs())
        nn.init.zeros_(convs[-1].weight)  # adds nothing until trained: a warm start keeps the trunk's output

    def forward(self, reference: torch.Tensor, base: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        local = self.inlet_relu(self.inlet(torch.cat([reference, base], dim=1)))
        hidden = self.body(torch.cat([local, self.lift(features)], dim=1))
        return self.shuffle(hidden)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def count_macs(model: WindowRestorer, height: int, width: int) -> int:
    """Multiply-accumulates of all convolutions for one output frame of ``height`` x ``width`` (an upscaling
    model: for one input frame of that size)."""
    if model.config.scale > 1:
        from engines.arch_sr import UpscalingRestorer, count_upscaling_macs

        if isinstance(model, UpscalingRestorer):
            return count_upscaling_macs(model, height, width)
    positions = (height // model.config.unshuffle) * (width // model.config.unshuffle)
    total = 0
    for module in model.body:
        if isinstance(module, nn.Conv2d):
            kernel_h, kernel_w = module.kernel_size
            total += module.in_channels * module.out_channels * kernel_h * kernel_w * positions
    skip = model.reference_skip
    total += skip.in_channels * skip.out_channels * positions
    if model.state_fusion is not None and model.gate is not None:
        total += model.state_fusion.in_channels * model.state_fusion.out_channels * positions
        inlet, out = model.gate.inlet, model.gate.out
        total += (
            inlet.in_channels * inlet.out_channels * inlet.kernel_size[0] ** 2 + out.in_channels * out.out_channels * 9
        ) * positions
        if model.gate.context is not None:  # once per frame, on the features' mean
            total += model.gate.context.in_channels * model.gate.context.out_channels
    if model.context is not None:
        total += model.context.macs(positions)
    if model.detail is not None:
        half = (height // 2) * (width // 2)
        for module in [model.detail.inlet, *model.detail.body]:
            if isinstance(module, nn.Conv2d):
                kernel_h, kernel_w = module.kernel_size
                total += module.in_channels * module.out_channels * kernel_h * kernel_w * half
    return total


def deepen_state(state: dict[str, torch.Tensor], old_depth: int, new_depth: int) -> dict[str, torch.Tensor]:
    """Net2Deeper: weights of a ``new_depth`` model that computes exactly what the ``old_depth`` one did.

    Extra 3x3 layers go in before the output conv, initialised to the identity: their input comes out of a
    ReLU (non-negative), so identity + ReLU passes it through unchanged. Training then starts from the old
    model's quality instead of from scratch.
    """
    if new_depth < old_depth:
        raise ValueError("can only add layers")
    if "context.down1.weight" in state and new_depth // 2 != old_depth // 2:
        # the path adds to the middle layer, which would move to another (trained) layer
        raise ValueError(f"a model with a context path cannot grow from depth {old_depth} to {new_depth}")
    old_last, new_last = 2 * (old_depth + 1), 2 * (new_depth + 1)
    grown = {key: value for key, value in state.items() if not key.startswith(f"body.{old_last}.")}
    for suffix in ("weight", "bias"):
        grown[f"body.{new_last}.{suffix}"] = state[f"body.{old_last}.{suffix}"]
    width = state[f"body.{old_last}.weight"].shape[1]
    for layer in range(old_depth + 1, new_depth + 1):
        weight = torch.zeros(width, width, 3, 3)
        weight[:, :, 1, 1] = torch.eye(width)
        grown[f"body.{2 * layer}.weight"] = weight
        grown[f"body.{2 * layer}.bias"] = torch.zeros(width)
    return grown


def widen_state(
    state: dict[str, torch.Tensor], depth: int, new_width: int, seed: int = 0, jitter: float = 1e-3
) -> dict[str, torch.Tensor]:
    """Net2Wider: weights of a model with ``new_width`` hidden channels that computes what the narrower one did.

    Every hidden layer's new units copy a randomly chosen existing unit (same incoming weights and bias, so the
    same ReLU output); the next layer splits that unit's outgoing weight among its copies with random shares
    that sum to one. A tiny jitter on the copies' incoming weights lets Adam pull them apart (it would otherwise
    move proportional copies in lockstep); the function changes by far less than one 8-bit level. A recurrent
    model's ``state_fusion`` feeds the first hidden layer too, so its rows are copied with that layer's units; a
    context path reads the first layer (its inlet's weights split like the next layer's) and adds to the middle one
    (its output's channels copied with that layer's units). Widening a model with a detail path is refused.
    """
    if new_width != state["body.0.weight"].shape[0] and any(key.startswith("detail.") for key in state):
        # its PixelShuffle reads the last layer's units in groups of four, which single copies would break
        raise ValueError("a model with a detail path cannot be widened")
    generator = torch.Generator().manual_seed(seed)
    grown = dict(state)
    mappings: list[torch.Tensor] = []
    for layer in range(depth + 1):
        key = f"body.{2 * layer}"
        weight, bias = grown[f"{key}.weight"], grown[f"{key}.bias"]
        old_width = weight.shape[0]
        if new_width < old_width:
            raise ValueError("can only add channels")
        extra = torch.randint(0, old_width, (new_width - old_width,), generator=generator)
        mapping = torch.cat([torch.arange(old_width), extra])
        copied = weight[extra]
        spread = copied.std() if copied.numel() > 1 else torch.tensor(0.0)  # no copies when the width is kept
        copies = copied + jitter * spread * torch.randn(copied.shape, generator=generator)
        grown[f"{key}.weight"] = torch.cat([weight, copies])
        grown[f"{key}.bias"] = torch.cat([bias, bias[extra]])
        if layer == 0 and "state_fusion.weight" in grown:
            fusion = grown["state_fusion.weight"]
            grown["state_fusion.weight"] = torch.cat([fusion, fusion[extra]])
        mappings.append(mapping)
    for layer, mapping in enumerate(mappings):
        key = f"body.{2 * (layer + 1)}.weight"
        grown[key] = grown[key][:, mapping] * _split_shares(mapping, generator)[None, :, None, None]
    if "context.down1.weight" in grown:  # it reads the first layer's features and adds to the middle layer's
        grown["context.down1.weight"] = (
            grown["context.down1.weight"][:, mappings[0]] * _split_shares(mappings[0], generator)[None, :, None, None]
        )
        # PixelShuffle(2): the middle layer's unit j gets the output's channels 4j..4j+3; a copy gets its original's
        rows = (4 * mappings[depth // 2][:, None] + torch.arange(4)).reshape(-1)
        for suffix in ("weight", "bias"):
            grown[f"context.out.{suffix}"] = grown[f"context.out.{suffix}"][rows]
    return grown


def _split_shares(mapping: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shares, one per entry of ``mapping`` (new unit -> original unit), summing to one per original."""
    shares = torch.rand(len(mapping), generator=generator) * 0.5 + 0.75
    totals = torch.zeros(int(mapping.max()) + 1).index_add_(0, mapping, shares)
    return shares / totals[mapping]


def retarget_state(
    state: dict[str, torch.Tensor],
    old_window: int,
    new_window: int,
    old_reference: int,
    new_reference: int,
) -> dict[str, torch.Tensor]:
    """Start a model with another window length or reference frame from a trained one's weights.

    While the reference keeps its kind (centred stays centred, causal stays causal) the fusion weights are copied
    by signed offset from the reference: a longer window's new outer slots start at zero (the model computes
    exactly what the old one did), a shorter window drops the old outer slots' weights. When the reference moves
    to or from the window's edge (centred <-> causal) each old slot's weights are shared out among the new slots at
    the same temporal distance from the reference, so on still video the retargeted model computes what the
    trained one did and on slowly changing video it starts close to it instead of from noise; slots farther away
    than the old window reached start at zero.
    """
    key = "body.0.weight"
    weight = state[key]
    group = weight.shape[1] // old_window
    old = weight.reshape(weight.shape[0], old_window, group, *weight.shape[2:])
    new = old.new_zeros(old.shape[0], new_window, *old.shape[2:])
    old_ahead, new_ahead = old_window - 1 - old_reference, new_window - 1 - new_reference
    by_offset = (old_ahead == 0) == (new_ahead == 0) and (old_reference == 0) == (new_reference == 0)

    def position(offset: int) -> int:
        return offset if by_offset else abs(offset)

    for source in range(old_window):
        wanted = position(source - old_reference)
        targets = [slot for slot in range(new_window) if position(slot - new_reference) == wanted]
        for slot in targets:
            new[:, slot] += old[:, source] / len(targets)
    retargeted = dict(state)
    retargeted[key] = new.reshape(weight.shape[0], new_window * group, *weight.shape[2:])
    return retargeted


def build_model(config: ArchConfig, widths: list[int] | None = None) -> WindowRestorer:
    """The model for ``config``: an UpscalingRestorer (engines/arch_sr.py, same interface) where it upscales."""
    if config.scale > 1:
        from engines.arch_sr import UpscalingRestorer  # imports this module

        return UpscalingRestorer(config)  # type: ignore[return-value]  # the interface the tools use
    return WindowRestorer(config, widths)
