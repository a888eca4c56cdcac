"""Pieces both architectures use: the per-pixel LayerNorm and the padding to a network's size multiple."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of each pixel (NAFNet's LayerNorm2d): the same in training and in eval mode.

    Its parameters are named `weight` and `bias`, as in NAFNet's release, so published NAFNet weights load.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # N×C×H×W → N×H×W×C is free for channels_last tensors, and F.layer_norm normalises the last dimension.
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad H and W (bottom, right) up to multiples of `multiple`, the product of a network's strides."""
    height, width = x.shape[-2:]
    # Not `-height % multiple`: under torch.compile with dynamic shapes that is a modulo of a negative size, which
    # torch 2.11's inductor cannot lower once the padded size divides a tensor (the DCN's sampling grid). Rounding
    # up by floor division instead breaks the ONNX export's shape reasoning; this form suits both.
    pad_h, pad_w = (multiple - height % multiple) % multiple, (multiple - width % multiple) % multiple
    if torch.compiler.is_exporting():
        # An exported graph (imrestore.app.export) takes any H×W, so it cannot branch on the size: it always pads
        # (by zero pixels, when the size fits) and always reflects; export refuses images thinner than `multiple`.
        return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
    if pad_h == 0 and pad_w == 0:
        return x
    # Reflect continues the image without a hard edge; it needs the pad to be smaller than the side, so images
    # thinner than that (a few pixels) fall back to repeating the border.
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def count_macs(model: nn.Module, size: int = 256) -> int:
    """Multiply-accumulates of one forward pass on a 1×3×size×size input, counted over conv and linear layers.

    This is the convention of the papers' "MACs" columns (NAFNet's 16 G at width 32): the k·k·C_in/groups MACs
    of every conv output value; normalisation, activations, pooling and elementwise products are left out. The
    deformable convs count as the plain convs they are built from (weight and offset/mask convs; their
    bilinear sampling is not a MAC).
    """
    total = 0

    def count(module: nn.Module, inputs, output: torch.Tensor) -> None:
        nonlocal total
        # A conv weight is O×(C/groups)×kh×kw and a linear one O×C: each output value costs one row of it.
        total += output.numel() * module.weight[0].numel()

    hooks = [module.register_forward_hook(count) for module in model.modules()
             if isinstance(module, (nn.Conv2d, nn.Linear)) or _is_deformable(module)]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return total


def _is_deformable(module: nn.Module) -> bool:
    """A layer that holds a conv weight of its own without being an nn.Conv2d (the DCN layers)."""
    weight = getattr(module, "weight", None)
    return isinstance(weight, nn.Parameter) and weight.dim() == 4 and not isinstance(module, nn.Conv2d)
