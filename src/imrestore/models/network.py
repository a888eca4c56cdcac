"""The paper's restoration network: a DCN head, a ResNet encoder, LKA residual blocks, a decoder, a DCN tail.

    input 3×H×W
      head   DeformableConv2d 3 → F                      F×H×W       ─────────────┐ skip
      down1  residual block, stride 2, F → 2F           2F×H/2×W/2   ──────┐      │ skip
      down2  residual block, stride 2, 2F → 4F          4F×H/4×W/4         │      │
      body   `blocks` × ModifiedResBlock(4F)            4F×H/4×W/4         │      │
      up1    1×1 conv + pixel shuffle, 4F → 2F, + skip  2F×H/2×W/2   ◄─────┘      │
      up2    1×1 conv + pixel shuffle, 2F → F,  + skip   F×H×W       ◄────────────┘
      tail   DeformableConv2d F → 3                      3×H×W
    output = input + tail            (global residual: the network predicts the correction, not the image)

With F = 32 this is Table 1's 32×256×256 → 128×64×64 at a 256×256 input. Any H×W works: the input is
padded to a multiple of 4 (the two stride-2 stages) and the output is cropped back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imrestore.models.dcn import BACKENDS, DeformableConv2d
from imrestore.models.layers import LayerNorm2d, count_parameters, pad_to_multiple
from imrestore.models.lka import LargeKernelAttention
from imrestore.models.nafnet import NAFNet, NAFNetConfig
from imrestore.params import BOOLEAN, Section, choice, integer, nested, number, param

ARCHITECTURES = ("paper", "nafnet")
DCN_KERNELS = (3, 4)
DCN_BACKENDS = ("auto", *BACKENDS)
NORMS = ("layer", "batch")
DOWNSCALE = 4  # two stride-2 stages


@dataclass(frozen=True)
class ModelConfig(Section):
    """The `model` section: which architecture, and its sizes (the paper network's keys, or `nafnet`)."""

    SECTION = "model"

    # "paper" (RestorationNet, below) | "nafnet" (imrestore.models.nafnet, sized by `nafnet`)
    arch: str = param("paper", choice(*ARCHITECTURES))
    blocks: int = param(9, integer(minimum=1))  # the paper's residual-block count (`-S model.blocks=12`)
    features: int = param(32, integer(minimum=1))  # F: channels at full resolution; the body runs at 4F
    dcn_kernel: int = param(3, choice(*DCN_KERNELS))  # 3 (SIDD in the paper) or 4 (GoPro)
    lka: bool = param(True, BOOLEAN)  # ablation switch: Large Kernel Attention in every body block
    attention: bool = param(True, BOOLEAN)  # ablation switch: channel attention in every body block
    dcn_backend: str = param("auto", choice(*DCN_BACKENDS))
    norm: str = param("layer", choice(*NORMS))  # "batch" is the paper's BatchNorm; `norm_layer` says why not
    # Where each block's layer scale starts. VAN uses 1e-2 for 300-epoch runs; at the sample's 600 steps that mutes
    # the body early on and each seed's run gets going at a different step: the denoiser's validation PSNR across
    # seeds 0, 1, 2 spread by σ 0.89 dB at 1e-2, 0.55 at 0.1 and 0.22 at 1.0, at the same mean (README, "Training
    # on the sample"). LayerNorm, not a small scale, is what keeps the blocks finite (`norm_layer`).
    layer_scale: float = param(1.0, number(above=0))
    nafnet: NAFNetConfig = nested(NAFNetConfig)

    def to_params(self) -> dict[str, Any]:
        """Plain JSON values (tuples as lists): what checkpoints and config.json record, and from_params reads."""
        return json_ready(asdict(self))


def json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value


def norm_layer(kind: str, channels: int) -> nn.Module:
    """The network's normalisation: per-pixel LayerNorm (the default) or the paper's BatchNorm.

    With BatchNorm the network diverges in eval mode. Training normalises each batch by its own statistics,
    so every block's branch is blind to the scale of its input; eval mode uses fixed running statistics, so
    the branch scales with its input — and LKA's gate (attn ⊙ x, attn linear in x) makes it quadratic. Each
    block then maps a residual stream of size r to about r + c·r², which is doubly exponential over 9–12
    blocks: measured on a 12-block denoiser after 150 steps, the stream's RMS went 1.4, 2.4, 11, 155,
    2.8e4, 2.5e8, 1e16, inf, and every test image came out NaN (README, "Why LayerNorm"). LayerNorm
    normalises each pixel by its own statistics in both modes, so a branch's output is bounded by its weights
    whatever its input, and its statistics are those of the pixel alone, so tiles equal untiled inference.
    """
    return LayerNorm2d(channels) if kind == "layer" else nn.BatchNorm2d(channels)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: a global summary of each channel decides how much of it to keep."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = nn.AdaptiveAvgPool2d(1)
        self.excite = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.excite(self.squeeze(x))


class MLP(nn.Module):
    """Per-pixel feed-forward (1×1 expand, GELU, 1×1 project), as in VAN and NAFNet's FFN.

    Expansion 1 by default: with it the 9-block network has 3,598,426 parameters, 0.69% above the paper's
    3,573,615; VAN's and NAFNet's expansion 2 would give 3,894,490 (+9.0%).
    """

    def __init__(self, channels: int, expansion: int = 1) -> None:
        super().__init__()
        hidden = channels * expansion
        self.expand = nn.Conv2d(channels, hidden, kernel_size=1)
        self.activation = nn.GELU()
        self.project = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.activation(self.expand(x)))


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    # No bias: every 3×3 conv here feeds a normalisation, whose shift makes a bias redundant (ResNet does the same).
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class ModifiedResBlock(nn.Module):
    """The paper's Fig. 9: conv → BN → ReLU → conv → BN → LKA → channel attention → MLP, plus the input."""

    def __init__(self, channels: int, lka: bool = True, attention: bool = True, norm: str = "layer",
                 layer_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.norm1 = norm_layer(norm, channels)
        self.conv2 = conv3x3(channels, channels)
        self.norm2 = norm_layer(norm, channels)
        self.lka = LargeKernelAttention(channels) if lka else nn.Identity()
        self.channel_attention = ChannelAttention(channels) if attention else nn.Identity()
        self.mlp = MLP(channels)
        # Layer scale (VAN's, around LKA): a per-channel gain on the branch that training tunes block by block.
        # It starts at `model.layer_scale` (ModelConfig says why 1.0 and not VAN's 1e-2).
        self.scale = nn.Parameter(torch.full((1, channels, 1, 1), float(layer_scale)))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """What the block adds to the residual stream (before the layer scale)."""
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        y = self.lka(y)  # spatial gating with a 21×21 receptive field
        y = self.channel_attention(y)  # which channels matter for this image
        return self.mlp(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # No ReLU after the add (unlike ResNet): the identity path stays linear through 9–12 blocks, so
        # negative corrections survive to the decoder.
        return x + self.scale * self.branch(x)


class DownsampleBlock(nn.Module):
    """A ResNet basic block with stride 2 that doubles the channels; a 1×1 conv of every other pixel (ResNet's
    strided 1×1 conv) matches the shortcut."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "layer") -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride=2)
        self.norm1 = norm_layer(norm, out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.norm2 = norm_layer(norm, out_channels)
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            norm_layer(norm, out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        # The shortcut subsamples, then convolves at stride 1: the same function and parameters as a stride-2
        # 1×1 conv, without oneDNN's strided 1×1 CPU kernel. In channels_last its weight-gradient pass writes
        # past its workspace when the input has fewer channels than its block (oneDNN issue 6035): heap
        # corruption or wrong gradients, seen here as aborts of 8-channel bf16 steps on torch 2.11 and 2.14.
        return F.relu(y + self.shortcut(x[:, :, ::2, ::2]))


class UpsampleBlock(nn.Module):
    """2× upsampling by pixel shuffle (no checkerboard artefacts of a transposed conv), then the encoder skip."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "layer") -> None:
        super().__init__()
        self.expand = nn.Conv2d(in_channels, out_channels * 4, kernel_size=1, bias=False)
        self.shuffle = nn.PixelShuffle(2)
        self.fuse = nn.Sequential(conv3x3(out_channels, out_channels), norm_layer(norm, out_channels), nn.ReLU())

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        y = self.shuffle(self.expand(x)) + skip  # addition, not concatenation: the skip costs no parameters
        return self.fuse(y)


class RestorationNet(nn.Module):
    size_multiple = DOWNSCALE  # inference pads and tiles on this grid

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        f, k, backend, norm = config.features, config.dcn_kernel, config.dcn_backend, config.norm
        self.head = DeformableConv2d(3, f, kernel_size=k, backend=backend)
        self.down1 = DownsampleBlock(f, 2 * f, norm)
        self.down2 = DownsampleBlock(2 * f, 4 * f, norm)
        self.body = nn.Sequential(*(ModifiedResBlock(4 * f, lka=config.lka, attention=config.attention, norm=norm,
                                                     layer_scale=config.layer_scale)
                                    for _ in range(config.blocks)))
        self.up1 = UpsampleBlock(4 * f, 2 * f, norm)
        self.up2 = UpsampleBlock(2 * f, f, norm)
        # An even kernel reads around a point half a pixel off each output pixel. The head reads half a pixel
        # after, the tail half a pixel before, so the predicted residual lands on the pixel it corrects; with both
        # after, it would be one pixel off the input it is added to, for the weights to learn back.
        self.tail = DeformableConv2d(f, 3, kernel_size=k, backend=backend, even_padding="before")
        # A zero tail makes a fresh network the identity (output = input): training starts at the input's PSNR
        # instead of first unlearning a random residual, which is most of a short budget (+0.3 dB on the
        # sample's denoiser at 600 steps; README, "Training on the sample").
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, DOWNSCALE)
        full = self.head(padded)
        half = self.down1(full)
        quarter = self.body(self.down2(half))
        half = self.up1(quarter, half)
        full = self.up2(half, full)
        residual = self.tail(full)
        return x + residual[..., :height, :width]


def build_network(config: ModelConfig | None = None) -> nn.Module:
    """The network `config.arch` names: the paper's RestorationNet or NAFNet. Both map N×3×H×W images in [0, 1]
    to their restoration, take any H×W, and say their padding grid as `size_multiple`."""
    config = config or ModelConfig()
    return NAFNet(config.nafnet) if config.arch == "nafnet" else RestorationNet(config)


def describe_network(net: nn.Module) -> dict[str, Any]:
    """What metrics record about the network that made them: its architecture, sizes and parameter count."""
    net = getattr(net, "_orig_mod", net)  # a torch.compile wrapper describes the module it wraps
    if isinstance(net, NAFNet):
        return {"arch": "nafnet", "parameters": count_parameters(net), **json_ready(asdict(net.config)),
                "size": net.config.describe()}
    config = net.config
    return {"arch": "paper", "parameters": count_parameters(net), "blocks": config.blocks,
            "features": config.features, "dcn_kernel": config.dcn_kernel}


def parameter_table(config: ModelConfig | None = None, size: int = 256) -> list[tuple[str, str, int]]:
    """(stage, output shape for a size×size input, parameters), one row per stage, in forward order.

    The rows add up to `count_parameters(RestorationNet(config))`; compare with the paper's Table 1.
    """
    config = config or ModelConfig()
    model = RestorationNet(config)
    f = config.features

    def shape(channels: int, scale: int) -> str:
        return f"{channels}×{size // scale}×{size // scale}"

    rows = [
        ("head (DCN)", shape(f, 1), count_parameters(model.head)),
        ("down1", shape(2 * f, 2), count_parameters(model.down1)),
        ("down2", shape(4 * f, 4), count_parameters(model.down2)),
    ]
    rows += [(f"block{i + 1}", shape(4 * f, 4), count_parameters(block)) for i, block in enumerate(model.body)]
    rows += [
        ("up1", shape(2 * f, 2), count_parameters(model.up1)),
        ("up2", shape(f, 1), count_parameters(model.up2)),
        ("tail (DCN)", shape(3, 1), count_parameters(model.tail)),
    ]
    return rows
