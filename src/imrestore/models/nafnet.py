"""NAFNet (Chen et al. 2022, "Simple Baselines for Image Restoration"): the strong modern peer, `model.arch: nafnet`.

    input 3×H×W
      intro    3×3 conv 3 → W                                       W×H×W
      encoder  per level: NAFBlocks, then a 2×2 stride-2 conv C → 2C  (one level per entry of enc_blocks)
      middle   NAFBlocks at the lowest resolution
      decoder  per level: 1×1 conv 2C → 4C + pixel shuffle (→ C), + the encoder skip, NAFBlocks
      ending   3×3 conv W → 3
    output = input + ending          (global residual, as in the paper's network)

A NAFBlock has no nonlinear activation: LayerNorm, a 1×1 conv to 2C, a 3×3 depthwise conv, SimpleGate (the
two halves multiplied), simplified channel attention (a global average pool and a 1×1 conv that scales the
channels), a 1×1 conv back, added with a learned per-channel scale β (zero at init); then the same with a
feed-forward (LayerNorm, 1×1 to 2C, SimpleGate, 1×1) and scale γ.

Module and parameter names follow NAFNet's release (`intro`, `encoders`, `downs`, `middle_blks`, `ups`,
`decoders`, `ending`; `conv1`…`conv5`, `sca`, `norm1`, `norm2`, `beta`, `gamma`), so published NAFNet weights
load into this module as they are (`imrestore.models.weights.load_published`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from imrestore.models.layers import LayerNorm2d, pad_to_multiple
from imrestore.params import Section, integer, invalid, items, param


COUNTS = items(integer(minimum=0), "block counts (integers ≥ 0), one per level")


@dataclass(frozen=True)
class NAFNetConfig(Section):
    """`model.nafnet`: the width and the NAFBlocks per level, or one of NAMED_SIZES by name."""

    SECTION = "model.nafnet"

    width: int = param(16, integer(minimum=1))
    enc_blocks: tuple[int, ...] = param((1, 1, 1, 1), COUNTS)
    middle_blocks: int = param(1, integer(minimum=0))
    dec_blocks: tuple[int, ...] = param((1, 1, 1, 1), COUNTS)

    @classmethod
    def from_params(cls, value: Any, where: str | None = None, **options: Any) -> NAFNetConfig:
        """A mapping of sizes, or the name of one of NAMED_SIZES."""
        if isinstance(value, str) or not (value is None or isinstance(value, Mapping)):
            if not isinstance(value, str) or value not in NAMED_SIZES:  # a list is unhashable: test the type first
                raise invalid(f"params.yaml: {where or cls.SECTION}",
                              f"a mapping of sizes or one of {', '.join(NAMED_SIZES)}", value)
            return NAMED_SIZES[value]
        return super().from_params(value, where, **options)

    @classmethod
    def check_consistency(cls, values: dict[str, Any], fail: Callable[[str, str], None]) -> None:
        if len(values["dec_blocks"]) != len(values["enc_blocks"]):
            fail("dec_blocks", f"as many levels as enc_blocks ({len(values['enc_blocks'])})")

    def describe(self) -> str:
        """`width 16, blocks 1-1-1-1 / 1 / 1-1-1-1` (encoder levels / middle / decoder levels): one string, which
        `dvc exp show` keeps (it drops lists from metrics), so reports and tables can name the size."""
        encoder, decoder = ("-".join(map(str, counts)) or "none" for counts in (self.enc_blocks, self.dec_blocks))
        return f"width {self.width}, blocks {encoder} / {self.middle_blocks} / {decoder}"


# The configurations NAFNet's release trains (its options/train/{GoPro,SIDD}/NAFNet-width{32,64}.yml), by name:
# `dvc exp run -S model.arch=nafnet -S model.nafnet=sidd-width32`. NAFNet's paper gives 16 GMACs at width 32 and
# 65 GMACs at width 64 (256×256 input); `parameter_summary` counts ours.
NAMED_SIZES = {
    "gopro-width32": NAFNetConfig(width=32, enc_blocks=(1, 1, 1, 28), middle_blocks=1, dec_blocks=(1, 1, 1, 1)),
    "gopro-width64": NAFNetConfig(width=64, enc_blocks=(1, 1, 1, 28), middle_blocks=1, dec_blocks=(1, 1, 1, 1)),
    "sidd-width32": NAFNetConfig(width=32, enc_blocks=(2, 2, 4, 8), middle_blocks=12, dec_blocks=(2, 2, 2, 2)),
    "sidd-width64": NAFNetConfig(width=64, enc_blocks=(2, 2, 4, 8), middle_blocks=12, dec_blocks=(2, 2, 2, 2)),
}
PUBLISHED_GMACS = {"gopro-width32": 16, "sidd-width32": 16, "gopro-width64": 65, "sidd-width64": 65}


class SimpleGate(nn.Module):
    """NAFNet's activation: split the channels in two halves and multiply them (a GLU without the sigmoid)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = x.chunk(2, dim=1)
        return first * second


class NAFBlock(nn.Module):
    def __init__(self, channels: int, dw_expand: int = 2, ffn_expand: int = 2) -> None:
        super().__init__()
        dw_channels, ffn_channels = channels * dw_expand, channels * ffn_expand
        self.norm1 = LayerNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, dw_channels, kernel_size=1)
        self.conv2 = nn.Conv2d(dw_channels, dw_channels, kernel_size=3, padding=1, groups=dw_channels)
        self.sg = SimpleGate()
        # Simplified channel attention: like squeeze-and-excitation without its MLP and sigmoid. Its global pool
        # makes the block non-local, so tiled inference pools per tile (imrestore.evaluation.inference says what it costs).
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw_channels // 2, dw_channels // 2, 1))
        self.conv3 = nn.Conv2d(dw_channels // 2, channels, kernel_size=1)
        self.norm2 = LayerNorm2d(channels)
        self.conv4 = nn.Conv2d(channels, ffn_channels, kernel_size=1)
        self.conv5 = nn.Conv2d(ffn_channels // 2, channels, kernel_size=1)
        # Zero-initialised scales: every block starts as the identity (the paper's network uses a layer scale too).
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.sg(self.conv2(self.conv1(self.norm1(x))))
        y = self.conv3(y * self.sca(y))
        x = x + self.beta * y
        y = self.conv5(self.sg(self.conv4(self.norm2(x))))
        return x + self.gamma * y


class NAFNet(nn.Module):
    def __init__(self, config: NAFNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or NAFNetConfig()
        self.size_multiple = 2 ** len(config.enc_blocks)  # one stride-2 conv per level
        channels = config.width
        self.intro = nn.Conv2d(3, channels, kernel_size=3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        for blocks in config.enc_blocks:
            self.encoders.append(nn.Sequential(*(NAFBlock(channels) for _ in range(blocks))))
            self.downs.append(nn.Conv2d(channels, 2 * channels, kernel_size=2, stride=2))
            channels *= 2
        self.middle_blks = nn.Sequential(*(NAFBlock(channels) for _ in range(config.middle_blocks)))
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for blocks in config.dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(channels, 2 * channels, kernel_size=1, bias=False),
                                          nn.PixelShuffle(2)))
            channels //= 2
            self.decoders.append(nn.Sequential(*(NAFBlock(channels) for _ in range(blocks))))
        self.ending = nn.Conv2d(config.width, 3, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        # NAFNet's release pads with zeros; reflect (as the paper's network does) leaves no dark band to restore,
        # and images whose sides are multiples of 16 (GoPro's 1280×720, SIDD's 256² blocks) are not padded at all.
        padded = pad_to_multiple(x, self.size_multiple)
        y = self.intro(padded)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            y = encoder(y)
            skips.append(y)
            y = down(y)
        y = self.middle_blks(y)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            y = decoder(up(y) + skip)
        return x + self.ending(y)[..., :height, :width]
