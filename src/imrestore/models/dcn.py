"""Modulated deformable convolution (DCNv2): y(p0) = sum_n w(pn) * x(p0 + pn + dpn) * m(pn).

Two interchangeable implementations of the same operator:

- "torchvision": `torchvision.ops.deform_conv2d`, the reference. Its CPU backward is slow
  (`_deform_conv2d_backward` was ~60% of a training step on the 2-core development machine). Its kernels
  take float32 only (on the CPU, autocast does not cast for them), so under bf16 autocast this backend runs
  in float32 and casts back, like any op autocast keeps in float32.
- "grid_sample": `deform_conv2d_grid_sample` below, pure PyTorch. It reads all k*k sampling positions of
  every output pixel with ONE `F.grid_sample` call, scales them by the mask, and contracts them with the
  weight in ONE matrix product. Both steps are large, well-vectorised kernels with fast backward passes, so
  forward+backward is several times faster than torchvision's on CPU. It matches torchvision's values and
  gradients to float rounding, out-of-image samples and integer (kink) positions included. In float32 a
  sample within ~1 ulp of a pixel may round to the other side of it in one implementation; its offset
  gradient then takes the neighbouring slope -- an isolated difference either answer is right about.

`DeformableConv2d` is the layer the network uses: offsets and mask come from a plain conv on the same
input, zero-initialised, so a fresh layer computes exactly the plain conv with its weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imrestore.errors import ImrestoreError

BACKENDS = ("torchvision", "grid_sample")

# backend="auto" picks per device type. CPU: grid_sample fwd+bwd was 5.8x faster than torchvision for the
# operator at (8, 32, 64, 64, k3), and 2.7-3.1x for the whole layer (offset conv included) in
# benchmarks/dcn_speed.py on a 2-core machine that other jobs shared. CUDA: torchvision's kernels, until a GPU run of
# benchmarks/dcn_speed.py --device cuda says otherwise -- update this table from its figures.
# Device types not listed (mps, xpu, ...) get grid_sample, the one that runs wherever PyTorch does.
FASTEST_BACKEND = {"cpu": "grid_sample", "cuda": "torchvision"}
FALLBACK_BACKEND = "grid_sample"


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ImrestoreError(f"deformable conv {name}: expected an int or a pair of ints, found {value!r}")
    return pair  # type: ignore[return-value]


def _check_shapes(input: Tensor, offset: Tensor, weight: Tensor, mask: Tensor | None, out_size: tuple[int, int]):
    """Raise ImrestoreError unless the tensors fit together (groups = offset groups = 1)."""
    if input.dim() != 4:
        raise ImrestoreError(f"deformable conv input: expected (B, C, H, W), found shape {tuple(input.shape)}")
    if out_size[0] <= 0 or out_size[1] <= 0:
        raise ImrestoreError(
            "deformable conv: expected an input at least as large as the dilated kernel "
            f"{tuple(weight.shape[-2:])}, found input shape {tuple(input.shape)} (output size would be {out_size})"
        )
    batch, channels = input.shape[:2]
    _, weight_channels, kernel_h, kernel_w = weight.shape
    kernel_points = kernel_h * kernel_w
    if weight_channels != channels:
        raise ImrestoreError(
            f"deformable conv weight: expected {channels} input channels (groups=1 only), "
            f"found weight shape {tuple(weight.shape)} for input shape {tuple(input.shape)}"
        )
    expected = (batch, 2 * kernel_points, *out_size)
    if tuple(offset.shape) != expected:
        raise ImrestoreError(
            f"deformable conv offset: expected shape {expected} (B, 2*kh*kw, Ho, Wo; one offset group only), "
            f"found {tuple(offset.shape)}"
        )
    if mask is not None and tuple(mask.shape) != (batch, kernel_points, *out_size):
        raise ImrestoreError(
            f"deformable conv mask: expected shape {(batch, kernel_points, *out_size)} (B, kh*kw, Ho, Wo), "
            f"found {tuple(mask.shape)}"
        )


def _pad_to_power_of_two(input: Tensor) -> Tensor:
    """Zero-pad H and W (bottom, right) up to powers of two, so pixel <-> grid coordinates convert exactly.

    Bilinear interpolation has a kink at every integer position, and there the gradient w.r.t. the offset
    is one-sided: torchvision takes the forward difference. grid_sample converts our normalised coordinate
    back to pixels as (g + 1) * size / 2 - 0.5; for a size that is not a power of two that round trip can
    turn 3.0 into 2.9999999, flipping the derivative to the backward difference. A fresh DCN layer has ALL
    its samples at integer positions (zero offsets), so this matters on the first training step. With a
    power-of-two size integer positions round-trip exactly, and the zeros added match torchvision's zeros
    outside the image.
    The usual training crops (64, 128, 256) need no padding; odd sizes cost up to ~4x the input's memory
    (still less than the k*k columns).
    """
    if torch.compiler.is_exporting():
        # An exported graph takes any H×W, and a power of two of a symbolic size is no graph op. It only runs
        # forward, where the padding changes nothing but float rounding: the zeros match out-of-image reads.
        return input
    height, width = input.shape[-2:]
    padded_h, padded_w = 1 << (height - 1).bit_length(), 1 << (width - 1).bit_length()
    if (padded_h, padded_w) == (height, width):
        return input
    return F.pad(input, (0, padded_w - width, 0, padded_h - height))


def _sampling_grid(offset: Tensor, kernel: tuple[int, int], in_size: tuple[int, int], stride, padding, dilation):
    """grid_sample's (B, K*Ho, Wo, 2) grid of normalised (x, y) for every kernel point and output pixel.

    Pixel position of kernel point k = (i, j) for output (ho, wo), torchvision's convention:
        y = ho*stride - padding + i*dilation + offset[:, 2k],  x = wo*stride - padding + j*dilation + offset[:, 2k+1]
    """
    batch, _, out_h, out_w = offset.shape
    kernel_h, kernel_w = kernel
    height, width = in_size
    options = {"device": offset.device, "dtype": offset.dtype}
    # Regular conv positions, (K, Ho, 1) rows and (K, 1, Wo) columns; k = i*kernel_w + j as in torchvision.
    rows = torch.arange(kernel_h, **options).repeat_interleave(kernel_w) * dilation[0]
    cols = torch.arange(kernel_w, **options).repeat(kernel_h) * dilation[1]
    base_y = rows[:, None, None] + (torch.arange(out_h, **options) * stride[0] - padding[0])[None, :, None]
    base_x = cols[:, None, None] + (torch.arange(out_w, **options) * stride[1] - padding[1])[None, None, :]
    y = base_y + offset[:, 0::2]  # (B, K, Ho, Wo)
    x = base_x + offset[:, 1::2]
    # align_corners=False maps pixel p to (2p + 1) / size - 1 and has no singularity at size 1. With
    # padding_mode="zeros" each of the 4 bilinear corners outside the image contributes zero -- exactly
    # torchvision's bilinear_interpolate, whose out-of-image samples are zero corner by corner.
    grid = torch.stack(((2 * x + 1) / width - 1, (2 * y + 1) / height - 1), dim=-1)
    return grid.view(batch, -1, out_w, 2)


def deform_conv2d_grid_sample(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    mask: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
) -> Tensor:
    """`torchvision.ops.deform_conv2d` in pure PyTorch: one grid_sample, one matrix product.

    Same tensors and semantics as torchvision: input (B, C, H, W), offset (B, 2*kh*kw, Ho, Wo) holding a
    (dy, dx) pair per kernel point in row-major kernel order, weight (O, C, kh, kw), mask (B, kh*kw, Ho, Wo)
    or None (= all ones). Samples outside the image are zero; fractional positions are bilinear.
    Pass mask, stride, padding and dilation by keyword: torchvision's positional order puts mask last.
    Limits: groups = 1 and one offset group (the DCNv2 layer here needs nothing else); other shapes raise
    ImrestoreError. Memory: the sampled columns are (B, C*kh*kw, Ho*Wo), like an unfold (im2col).
    """
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    height, width = input.shape[-2:]
    kernel = tuple(weight.shape[-2:])
    out_size = tuple(
        (size + 2 * pad - dil * (k - 1) - 1) // step + 1
        for size, pad, dil, k, step in zip((height, width), padding, dilation, kernel, stride)
    )
    _check_shapes(input, offset, weight, mask, out_size)
    return _deform_conv2d_sampled(input, offset, weight, bias, mask, stride, padding, dilation)


def _deform_conv2d_sampled(input, offset, weight, bias, mask, stride, padding_before, dilation) -> Tensor:
    """The computation behind `deform_conv2d_grid_sample`, shapes already checked.

    The output size is the offset's, and padding is only the shift of the sampling grid (top, left):
    everything outside the image reads zero anyway. So a layer with an even kernel can pass its asymmetric
    "same" padding here as (k-1)//2 without a padded copy of its input.
    """
    channels, out_channels = input.shape[1], weight.shape[0]
    if out_channels < channels:  # e.g. the network's tail, 32 -> 3 channels
        output = _project_then_sample(input, offset, weight, mask, stride, padding_before, dilation)
    else:
        output = _sample_then_project(input, offset, weight, mask, stride, padding_before, dilation)
    if bias is not None:
        output = output + bias.view(1, -1, 1, 1)
    return output


def _sample_then_project(input, offset, weight, mask, stride, padding_before, dilation) -> Tensor:
    """Sample C*K columns (im2col at the deformed positions), then one GEMM with the (O, C*K) weight."""
    batch, channels = input.shape[:2]
    out_channels, _, kernel_h, kernel_w = weight.shape
    kernel_points = kernel_h * kernel_w
    out_size = tuple(offset.shape[-2:])
    sampled = _pad_to_power_of_two(input)
    grid = _sampling_grid(offset, (kernel_h, kernel_w), tuple(sampled.shape[-2:]), stride, padding_before, dilation)
    # (B, C, K*Ho, Wo) is laid out as (B, C, K, Ho, Wo): viewing it as im2col columns needs no copy.
    columns = F.grid_sample(sampled, grid.to(input.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    columns = columns.view(batch, channels, kernel_points, *out_size)
    if mask is not None:
        columns = columns * mask.unsqueeze(1)
    # One GEMM over (C*K); einsum folds the batch into it, where `weight @ columns` would broadcast the
    # weight into a batched matmul (measured ~1.5x slower fwd+bwd on CPU).
    columns = columns.view(batch, channels * kernel_points, -1)
    output = torch.einsum("ok,bkl->bol", weight.reshape(out_channels, -1), columns)
    return output.view(batch, out_channels, *out_size)


def _project_then_sample(input, offset, weight, mask, stride, padding_before, dilation) -> Tensor:
    """Project C channels to O per kernel point first, then sample O*K channels instead of C*K.

    Bilinear sampling (zeros outside the image included) is linear and reads every channel at the same
    positions, so it commutes with a per-pixel channel projection: sum_c w[o,c,k] x_c(p_k) is the projection
    sum_c w[o,c,k] x_c, read at p_k. When O < C that samples C/O times fewer values: the network's 32 -> 3
    tail reads 27 channels per pixel instead of 288, at full resolution, where it matters most.
    """
    batch = input.shape[0]
    out_channels, channels, kernel_h, kernel_w = weight.shape
    kernel_points = kernel_h * kernel_w
    out_size = tuple(offset.shape[-2:])
    # (K*O, C) rows ordered (k, o): the projection comes out as (B, K, O, H, W), i.e. (B*K, O, H, W) images.
    per_point = weight.reshape(out_channels, channels, kernel_points).permute(2, 0, 1).reshape(-1, channels)
    projected = torch.einsum("jc,bchw->bjhw", per_point, input)
    projected = _pad_to_power_of_two(projected)
    projected = projected.reshape(batch * kernel_points, out_channels, *projected.shape[-2:])
    grid = _sampling_grid(offset, (kernel_h, kernel_w), tuple(projected.shape[-2:]), stride, padding_before,
                          dilation)
    grid = grid.view(batch * kernel_points, *out_size, 2)  # each kernel point's image reads its own positions
    sampled = F.grid_sample(projected, grid.to(input.dtype), mode="bilinear", padding_mode="zeros",
                            align_corners=False)
    sampled = sampled.view(batch, kernel_points, out_channels, *out_size)
    if mask is not None:
        sampled = sampled * mask.unsqueeze(2)
    return sampled.sum(dim=1)


def deform_conv2d_torchvision(input, offset, weight, bias=None, mask=None, stride=1, padding=0, dilation=1):
    """The reference, with the same keyword order as `deform_conv2d_grid_sample`."""
    from torchvision.ops import deform_conv2d  # imported late: loading torchvision's ops costs ~1 s

    # torchvision's CPU kernel refuses bf16 ("expected scalar type Float"), and CPU autocast does not cast for
    # it: compute in float32 with autocast off, and return the dtype the input came in.
    dtype = input.dtype
    with torch.autocast(input.device.type, enabled=False):
        as32 = lambda t: None if t is None else t.float()  # noqa: E731
        out = deform_conv2d(as32(input), as32(offset), as32(weight), as32(bias), stride=stride, padding=padding,
                            dilation=dilation, mask=as32(mask))
    return out.to(dtype) if dtype in (torch.float16, torch.bfloat16) else out


def resolve_backend(backend: str, device: torch.device) -> str:
    """The implementation name for `backend` ("auto" resolved by the FASTEST_BACKEND table)."""
    if backend == "auto":
        return FASTEST_BACKEND.get(device.type, FALLBACK_BACKEND)
    if backend not in BACKENDS:
        raise ImrestoreError(
            f"deformable conv backend: expected one of {', '.join(repr(b) for b in ('auto', *BACKENDS))}, "
            f"found {backend!r}"
        )
    return backend


EVEN_PADDING = ("after", "before")


def same_padding(kernel_size: int, extra: str = "after") -> tuple[int, int]:
    """(before, after) padding that keeps H x W at stride 1. An even kernel needs one more pixel on one side,
    `extra`: "after" centres it half a pixel after the output pixel, "before" half a pixel before it."""
    small, large = (kernel_size - 1) // 2, kernel_size // 2
    return (small, large) if extra == "after" else (large, small)


class DeformableConv2d(nn.Module):
    """Modulated deformable conv (DCNv2) with "same" padding: (B, C, H, W) -> (B, O, ceil(H/s), ceil(W/s)).

    A plain conv on the same (padded) input predicts 2*k*k offsets and k*k mask logits per output pixel.
    It is zero-initialised, as in DCNv2, so offsets start at 0. DCNv2's mask is sigmoid(logits), 0.5 at
    init; we use 2*sigmoid(logits) instead so the initial modulation is exactly 1 and a fresh layer IS the
    plain conv with `weight` and `bias` -- the paper's "starts as a plain conv". The mask's range (0, 2)
    also lets the layer amplify a sample, which plain DCNv2 cannot.
    Kernel sizes 3 and 4 are the paper's. An even kernel has no centre tap: padded (k-1)//2 before and k//2
    after (`even_padding="after"`) it reads around a point half a pixel after each output pixel; "before"
    mirrors that, so a network can pair the two and keep its output on its input's grid.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        bias: bool = True,
        backend: str = "auto",
        even_padding: str = "after",
    ):
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 1:
            raise ImrestoreError(f"DeformableConv2d kernel_size: expected a positive int, found {kernel_size!r}")
        if even_padding not in EVEN_PADDING:
            raise ImrestoreError(f"DeformableConv2d even_padding: expected 'after' or 'before', found {even_padding!r}")
        self.padding = same_padding(kernel_size, even_padding)
        resolve_backend(backend, torch.device("cpu"))  # fail at construction, not at the first forward
        self.kernel_size, self.stride, self.backend = kernel_size, stride, backend
        # The conv weight and bias, initialised as nn.Conv2d initialises its own.
        reference = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        self.weight = nn.Parameter(reference.weight.detach().clone())
        self.bias = nn.Parameter(reference.bias.detach().clone()) if bias else None
        points = kernel_size * kernel_size
        self.offset_mask = nn.Conv2d(in_channels, 3 * points, kernel_size, stride=stride)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    def forward(self, x: Tensor) -> Tensor:
        offset, mask = self.offset_and_mask(x)
        before, _ = self.padding
        stride = (self.stride, self.stride)
        if resolve_backend(self.backend, x.device) == "grid_sample":
            # Padding is a shift of the sampling grid here: no padded copy, and 64x64 stays a power of two.
            return _deform_conv2d_sampled(x, offset, self.weight, self.bias, mask, stride, (before, before), (1, 1))
        padded, padding = self._pad(x)
        return deform_conv2d_torchvision(
            padded, offset, self.weight, self.bias, mask=mask, stride=stride, padding=padding
        )

    def _pad(self, x: Tensor) -> tuple[Tensor, int]:
        """x and the symmetric padding still to apply, so that a conv keeps H x W ("same") at stride 1."""
        before, after = self.padding
        if before == after:  # odd kernel: the conv pads by itself, no copy
            return x, before
        return F.pad(x, (before, after, before, after)), 0

    def offset_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 2·k², H, W) sampling offsets in pixels (0: the regular grid) and (B, k², H, W) modulation in (0, 2)."""
        padded, padding = self._pad(x)
        offset_and_logits = F.conv2d(
            padded, self.offset_mask.weight, self.offset_mask.bias, stride=self.stride, padding=padding
        )
        points = self.kernel_size * self.kernel_size
        offset, logits = offset_and_logits.split((2 * points, points), dim=1)
        return offset, 2 * torch.sigmoid(logits)

    def extra_repr(self) -> str:
        out_channels, in_channels = self.weight.shape[:2]
        return (
            f"{in_channels}, {out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"bias={self.bias is not None}, backend={self.backend!r}"
            + (f", padding={self.padding}" if self.kernel_size % 2 == 0 else "")
        )
