"""The x2 super-resolution member of the family: a low-resolution window in, the reference frame at twice the
size out, restored and upscaled in one pass (for cameras' low-resolution substreams).

    frames [B, N*3, h, w]  (N RGB frames, oldest first, [0, 1])
      -> conv(u x u, stride u: N*3 -> C) + ReLU      (early fusion at 1/u of the input, as in engines/arch.py)
      -> depth x [conv3x3(C -> C) + ReLU]
      -> conv3x3(C -> 3*(u*s)^2)                     (a residual, (u*s)^2 output pixels per position)
      + conv(3u x 3u, stride u, pad u) of the reference frame (the upsampler: starts as bicubic x s)
      -> PixelShuffle(u*s), clamp to [0, 1]          -> restored [B, 3, h*s, w*s]

The upsampler is a plain convolution initialised to Keys' bicubic (a = -0.5) interpolation, so an untrained model
already upscales as well as bicubic and training learns what it adds; it stays trainable. Only Conv, ReLU, Add,
DepthToSpace, Clip and Slice: the graph exports and quantises like the other models (tools/export_onnx.py,
tools/quantize.py) and runs on every engine, whose ``streamer.scale`` metadata says the output is ``s`` times the
input. Weight names follow WindowRestorer's (``body.N``) where the tools look for them.
"""

from __future__ import annotations

import torch
from torch import nn

from engines.arch import ArchConfig, he_init

BICUBIC_A = -0.5


def cubic(distance: float, a: float = BICUBIC_A) -> float:
    """Keys' cubic convolution kernel at ``distance`` input pixels."""
    x = abs(distance)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def bicubic_upsampler(factor: int, scale: int) -> torch.Tensor:
    """Weights [3*(u*s)^2, 3, 3u, 3u] of the strided conv that upscales by ``scale`` with bicubic interpolation
    (half-pixel centres, as swscale and PyTorch place them), laid out for PixelShuffle(u*s): output channel
    c*(u*s)^2 + oy*(u*s) + ox is output pixel (oy, ox) of input block position's u*s x u*s patch, colour c."""
    block = factor * scale
    weight = torch.zeros(3 * block * block, 3, 3 * factor, 3 * factor)
    taps = torch.zeros(block, 3 * factor)
    for out in range(block):
        centre = (out + 0.5) / scale - 0.5  # the output pixel's position in input pixels from the block's start
        for tap in range(3 * factor):
            taps[out, tap] = cubic(tap - factor - centre)
    taps /= taps.sum(dim=1, keepdim=True)
    for colour in range(3):
        for row in range(block):
            for col in range(block):
                weight[colour * block * block + row * block + col, colour] = taps[row][:, None] * taps[col][None, :]
    return weight


class UpscalingRestorer(nn.Module):
    """Restores a window's reference frame and upscales it by ``config.scale`` (see the module's docstring)."""

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        if config.scale < 2:
            raise ValueError("an upscaling model needs scale >= 2")
        if config.recurrent or config.detail_width or config.first_kernel != 1:
            raise ValueError("an upscaling model has no recurrence, no detail path and a first kernel of 1")
        if not 0 <= config.reference_index < config.window:
            raise ValueError("reference_index must lie inside the window")
        self.config = config
        factor, block = config.unshuffle, config.unshuffle * config.scale
        hidden = config.width
        layers: list[nn.Module] = [nn.Conv2d(config.window * 3 * factor * factor, hidden, 1), nn.ReLU(inplace=True)]
        for _ in range(config.depth):
            layers += [nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(hidden, 3 * block * block, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.upsampler = nn.Conv2d(3, 3 * block * block, 3 * factor, stride=factor, padding=factor, bias=False)
        self.shuffle = nn.PixelShuffle(block)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        convs = he_init(self.body)
        with torch.no_grad():
            convs[-1].weight.zero_()  # adds nothing until trained: an untrained model is bicubic
            self.upsampler.weight.copy_(bicubic_upsampler(self.config.unshuffle, self.config.scale))

    def forward(self, frames: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        return self.step(frames, state)[0]

    def step(self, frames: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(restored and upscaled reference frame, the reference frame): the window models' interface."""
        factor = self.config.unshuffle
        start = 3 * self.config.reference_index
        reference = frames[:, start : start + 3]
        first = self.body[0]
        assert isinstance(first, nn.Conv2d)  # built so in __init__
        # a 1x1 conv after a per-frame PixelUnshuffle(u) is a u x u stride-u conv on the frames (engines/arch.py)
        weight = first.weight.reshape(first.out_channels, -1, factor, factor)
        fused = nn.functional.conv2d(frames, weight, first.bias, stride=factor)
        residual = self.body[-1](self.body[1:-1](fused))
        upscaled = self.shuffle(residual + self.upsampler(reference))
        return torch.clamp(upscaled, 0.0, 1.0), reference


def count_upscaling_macs(model: UpscalingRestorer, height: int, width: int) -> int:
    """Multiply-accumulates for one input frame of ``height`` x ``width`` (the output is ``scale`` times that)."""
    positions = (height // model.config.unshuffle) * (width // model.config.unshuffle)
    total = 0
    for module in [*model.body, model.upsampler]:
        if isinstance(module, nn.Conv2d):
            kernel_h, kernel_w = module.kernel_size
            total += module.in_channels * module.out_channels * kernel_h * kernel_w * positions
    return total
