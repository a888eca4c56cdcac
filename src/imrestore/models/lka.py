"""Large Kernel Attention, as VAN defines it (Guo et al. 2022, "Visual Attention Network").

A 21×21 receptive field is decomposed into a 5×5 depthwise conv, a 7×7 depthwise conv with dilation 3, and a
1×1 conv. The three are CHAINED — each reads the previous one's output — and the result gates the input:

    attn = Conv1×1(DWConv7×7,d3(DWConv5×5(x)))
    out  = attn ⊙ x

The authors' public notebook applied the three convs to x separately; that is a different (and much smaller
receptive field) operator, and we deliberately do not copy it. `tests/test_network.py` tells the two apart.

Parameters, biases included: (25C + C) + (49C + C) + (C² + C) = C² + 77C (tests/test_network.py counts them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
        # local context → long range, without a dense 21×21 kernel
        if attn.device.type == "cpu":
            attn = dilated_depthwise_by_phases(attn, self.depthwise_dilated)
        else:  # cuDNN has dilated depthwise kernels; the phase split is measured on CPU only
            attn = self.depthwise_dilated(attn)
        attn = self.pointwise(attn)  # mixes channels, which the depthwise convs cannot
        return attn * x


def lka_parameter_count(channels: int) -> int:
    """C² + 77C: the closed form VAN gives, biases included."""
    return channels * channels + 77 * channels


def dilated_depthwise_by_phases(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """`conv(x)` for a stride-1, "same"-padded, dilated depthwise conv, computed as an undilated one.

    A dilation-d conv only ever combines pixels whose coordinates agree modulo d, so it is the undilated
    kernel applied to each of the d×d phase images x[..., i::d, j::d] separately. oneDNN has no fast path for
    dilated depthwise convs on CPU (~2.5 GFLOP/s against ~100 for a dense 3×3 at the LKA's 128×180×320 of a
    720p frame); the phase split runs the same 7×7 at 2.2–4.5× the speed (benchmarks/inference_speed.py).
    Same weights, same result up to float rounding; zeros pad the phases exactly as the conv pads the image.
    """
    d = conv.dilation[0]
    batch, channels, height, width = x.shape
    pad_h, pad_w = -height % d, -width % d
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    h, w = (height + pad_h) // d, (width + pad_w) // d
    phases = x.reshape(batch, channels, h, d, w, d).permute(0, 3, 5, 1, 2, 4).reshape(batch * d * d, channels, h, w)
    kernel = conv.kernel_size[0]
    y = F.conv2d(phases, conv.weight, conv.bias, padding=(kernel - 1) // 2, groups=channels)
    y = y.view(batch, d, d, channels, h, w).permute(0, 3, 4, 1, 5, 2).reshape(batch, channels, h * d, w * d)
    return y[..., :height, :width]

