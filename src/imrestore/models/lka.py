"""Large Kernel Attention, as VAN defines it (Guo et al. 2022, "Visual Attention Network").

A 21×21 receptive field is decomposed into a 5×5 depthwise conv, a 7×7 depthwise conv with dilation 3, and a
1×1 conv. The three are CHAINED — each reads the previous one's output — and the result gates the input:

    attn = Conv1×1(DWConv7×7,d3(DWConv5×5(x)))
    out  = attn ⊙ x

The authors' public notebook applied the three convs to x separately; that is a different (and much smaller
receptive field) operator, and we deliberately do not copy it. `tests/test_network.py` tells the two apart.

Parameters, biases included: (25C + C) + (49C + C) + (C² + C) = C² + 77C, the figure DESIGN.md quotes.
"""

from __future__ import annotations

import torch
from torch import nn


class LargeKernelAttention(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        # padding keeps H×W: (5 - 1) / 2 = 2, and a 7-tap kernel dilated by 3 spans 19 pixels → padding 9.
        self.depthwise = nn.Conv2d(channels, channels, kernel_size=5, padding=2, groups=channels)
        self.depthwise_dilated = nn.Conv2d(channels, channels, kernel_size=7, padding=9, dilation=3, groups=channels)
        self.pointwise = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.depthwise(x)
        attn = self.depthwise_dilated(attn)  # local context → long range, without a dense 21×21 kernel
        attn = self.pointwise(attn)  # mixes channels, which the depthwise convs cannot
        return attn * x


def lka_parameter_count(channels: int) -> int:
    """C² + 77C: the closed form VAN gives, biases included."""
    return channels * channels + 77 * channels
