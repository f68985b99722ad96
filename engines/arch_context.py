"""Low-resolution context for the x2 trunk (``ArchConfig.context_width``).

The x2 trunk sees 11 x 11 of its positions, 22 x 22 pixels: less than two 16 x 16 macroblocks, and less than
what a walking person moves across a five-frame window. The context path gives it a wider view for little
compute: two stride-2 convolutions take the trunk's first features to 1/2 and 1/4 of its resolution (1/4 and 1/8
of the frame's at x2), a few 3x3 layers work at the coarsest, and a small decoder brings the result back through
PixelShuffle (with the intermediate features as a skip) and adds it to the trunk's middle layer. Plain
convolutions, ReLU, Add and DepthToSpace only, so TensorRT and ONNX Runtime int8 run it; frames must be a multiple
of 4x the trunk's space-to-depth factor (``ArchConfig.pad_multiple``, exported as ``streamer.pad_multiple``). Its last convolution starts at zero, so a
trunk trained without it computes exactly what it did when the path is added (warm start).
"""

from __future__ import annotations

import torch
from torch import nn

# the path's convolutions (attribute names) in the order they run; ``body`` holds the 1/8-resolution layers
# (tools/quantize.py finds the exported graph's convolutions in this order by their weights' names)
CONV_ORDER = ("down1", "down2", "body", "up", "merge", "out")


class ContextPath(nn.Module):
    """Trunk features [B, C, h, w] -> a residual for the trunk's middle layer, same shape (h, w multiples of 4)."""

    def __init__(self, channels: int, width: int, depth: int) -> None:
        super().__init__()
        self.down1 = nn.Conv2d(channels, width, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.up = nn.Conv2d(width, 4 * width, 1)
        self.merge = nn.Conv2d(width, width, 3, padding=1)
        self.out = nn.Conv2d(width, 4 * channels, 1)
        self.shuffle = nn.PixelShuffle(2)
        self.relu = nn.ReLU()
        self.quarter_relu = nn.ReLU()  # its output has two readers (down2, the skip): tools/qat.py rounds it here

    def convs(self) -> list[nn.Conv2d]:
        """The path's convolutions in the order they run (the output last)."""
        convs: list[nn.Conv2d] = []
        for name in CONV_ORDER:
            module = getattr(self, name)
            convs += [layer for layer in module if isinstance(layer, nn.Conv2d)] if name == "body" else [module]
        return convs

    def reset_parameters(self) -> None:
        for conv in self.convs():
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(conv.bias)  # type: ignore[arg-type]
        nn.init.zeros_(self.out.weight)  # adds nothing until trained: a warm start keeps the trunk's output

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        quarter = self.quarter_relu(self.down1(features))
        eighth = self.body(self.relu(self.down2(quarter)))
        merged = self.relu(self.merge(self.relu(self.shuffle(self.up(eighth)) + quarter)))
        return self.shuffle(self.out(merged))

    def macs(self, trunk_positions: int) -> int:
        """Multiply-accumulates for one frame whose trunk runs at ``trunk_positions`` positions."""
        total = 0
        for conv in self.convs():
            kernel_h, kernel_w = conv.kernel_size
            per_position = conv.in_channels * conv.out_channels * kernel_h * kernel_w
            # down1, merge and out produce 1/4 of the trunk's positions, the rest 1/16
            share = 4 if conv in (self.down1, self.merge, self.out) else 16
            total += per_position * trunk_positions // share
        return total
