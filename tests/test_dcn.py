"""Deformable convolution: the grid_sample implementation against torchvision's, and the DCNv2 layer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from imrestore.errors import ImrestoreError
from imrestore.models.dcn import (
    FASTEST_BACKEND,
    DeformableConv2d,
    deform_conv2d_grid_sample,
    resolve_backend,
    same_padding,
)


def out_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def make_case(kernel, stride, padding, dilation, height, width, dtype, with_mask, *, seed=0, batch=2, scale=1.5,
              channels=(3, 4)):
    """Random tensors for one deform conv; offsets reach up to `scale` x the image size, so many samples
    land outside the image or straddle its border."""
    generator = torch.Generator().manual_seed(seed)
    out_h, out_w = (out_size(s, kernel, stride, padding, dilation) for s in (height, width))
    points = kernel * kernel

    def rand(*shape):
        return torch.rand(*shape, generator=generator, dtype=dtype)

    tensors = {
        "input": rand(batch, channels[0], height, width) * 2 - 1,
        "offset": (rand(batch, 2 * points, out_h, out_w) * 2 - 1) * scale * max(height, width),
        "weight": rand(channels[1], channels[0], kernel, kernel) - 0.5,
        "bias": rand(channels[1]) - 0.5,
    }
    if with_mask:
        tensors["mask"] = rand(batch, points, out_h, out_w)
    return {name: t.requires_grad_() for name, t in tensors.items()}


def run_both(tensors, stride, padding, dilation):
    """Outputs and gradients (of a random projection of the output) for torchvision and grid_sample."""
    names = list(tensors)
    ours = deform_conv2d_grid_sample(**tensors, stride=stride, padding=padding, dilation=dilation)
    reference = deform_conv2d(**tensors, stride=stride, padding=padding, dilation=dilation)
    projection = torch.randn(reference.shape, generator=torch.Generator().manual_seed(1), dtype=reference.dtype)
    ours_grads = torch.autograd.grad((ours * projection).sum(), [tensors[n] for n in names])
    reference_grads = torch.autograd.grad((reference * projection).sum(), [tensors[n] for n in names])
    return (ours, dict(zip(names, ours_grads))), (reference, dict(zip(names, reference_grads)))


def assert_close_relative(actual, expected, rtol, name):
    scale = expected.abs().max().clamp_min(1.0)
    error = (actual - expected).abs().max() / scale
    assert error <= rtol, f"{name}: max error {error:.3g} relative to {scale:.3g} exceeds {rtol}"


# kernel, stride, padding, dilation, height, width
GEOMETRIES = [
    (3, 1, 1, 1, 9, 7),
    (3, 2, 0, 2, 11, 13),
    (4, 1, 0, 1, 8, 11),
    (4, 2, 1, 2, 13, 9),
    (3, 1, 0, 1, 5, 5),
]


# (in, out): more outputs samples first, fewer outputs projects first (the network's head and tail)
CHANNELS = [(3, 4), (5, 2)]


@pytest.mark.parametrize("backend", ["torchvision", "grid_sample"])
def test_mirrored_even_kernels_keep_an_image_on_its_grid(backend):
    """A 4×4 box filter reads around p + ½; the mirrored padding around p − ½. Chained, an impulse stays where it
    was: the network's head and tail are such a pair. Two of the same kind would move it by one pixel."""
    def box(extra: str) -> DeformableConv2d:
        layer = DeformableConv2d(1, 1, kernel_size=4, bias=False, backend=backend, even_padding=extra)
        with torch.no_grad():
            layer.weight.fill_(1 / 16)
        return layer

    image = torch.zeros(1, 1, 15, 15)
    image[0, 0, 7, 7] = 1
    grid = torch.arange(15.0)

    def centre(out: torch.Tensor) -> tuple[float, float]:
        weights = out[0, 0] / out.sum()
        return float((weights.sum(1) * grid).sum()), float((weights.sum(0) * grid).sum())

    with torch.no_grad():
        assert centre(box("before")(box("after")(image))) == pytest.approx((7.0, 7.0))
        assert centre(box("after")(box("after")(image))) == pytest.approx((6.0, 6.0))
        assert centre(box("after")(image)) == pytest.approx((6.5, 6.5))


@pytest.mark.parametrize("channels", CHANNELS, ids=["sample-then-project", "project-then-sample"])
@pytest.mark.parametrize("with_mask", [True, False], ids=["mask", "no-mask"])
@pytest.mark.parametrize("kernel,stride,padding,dilation,height,width", GEOMETRIES)
def test_values_and_all_gradients_match_torchvision_float64(
    kernel, stride, padding, dilation, height, width, with_mask, channels
):
    tensors = make_case(kernel, stride, padding, dilation, height, width, torch.float64, with_mask,
                        channels=channels)
    (ours, ours_grads), (reference, reference_grads) = run_both(tensors, stride, padding, dilation)
    assert ours.shape == reference.shape
    assert_close_relative(ours, reference, 1e-12, "output")
    for name in tensors:
        assert_close_relative(ours_grads[name], reference_grads[name], 1e-11, f"grad {name}")


@pytest.mark.parametrize("channels", CHANNELS, ids=["sample-then-project", "project-then-sample"])
@pytest.mark.parametrize("kernel,stride,padding,dilation,height,width", GEOMETRIES[:4])
def test_values_and_all_gradients_match_torchvision_float32(kernel, stride, padding, dilation, height, width,
                                                            channels):
    tensors = make_case(kernel, stride, padding, dilation, height, width, torch.float32, with_mask=True, seed=2,
                        channels=channels)
    (ours, ours_grads), (reference, reference_grads) = run_both(tensors, stride, padding, dilation)
    assert_close_relative(ours, reference, 1e-5, "output")
    for name in tensors:
        assert_close_relative(ours_grads[name], reference_grads[name], 1e-4, f"grad {name}")


def test_integer_and_half_pixel_offsets_match_torchvision_at_the_border():
    """Samples exactly on pixels, on the border and one pixel beyond it: where bilinear weights degenerate."""
    tensors = make_case(3, 1, 1, 1, 6, 7, torch.float64, with_mask=True, seed=3)
    with torch.no_grad():
        tensors["offset"].copy_((tensors["offset"] * 2).round() / 2)  # multiples of 0.5 in [-10.5, 10.5]
    (ours, ours_grads), (reference, reference_grads) = run_both(tensors, 1, 1, 1)
    assert_close_relative(ours, reference, 1e-12, "output")
    for name in tensors:
        assert_close_relative(ours_grads[name], reference_grads[name], 1e-11, f"grad {name}")


def test_samples_entirely_outside_the_image_are_zero():
    tensors = make_case(3, 1, 1, 1, 5, 6, torch.float64, with_mask=True)
    far = torch.full_like(tensors["offset"], 100.0)
    output = deform_conv2d_grid_sample(tensors["input"], far, tensors["weight"], tensors["bias"], padding=1)
    expected = tensors["bias"].view(1, -1, 1, 1).expand_as(output)
    torch.testing.assert_close(output, expected)


def test_gradcheck_tiny_float64():
    tensors = make_case(3, 1, 1, 1, 4, 5, torch.float64, with_mask=True, batch=1, scale=0.6, seed=4)
    # Bilinear interpolation has kinks at integer positions; random fractional offsets stay clear of them.
    names = list(tensors)

    def function(*args):
        return deform_conv2d_grid_sample(**dict(zip(names, args)), stride=1, padding=1)

    assert torch.autograd.gradcheck(function, [tensors[n] for n in names], eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("backend", ["torchvision", "grid_sample", "auto"])
@pytest.mark.parametrize("kernel,stride,extra", [(3, 1, "after"), (4, 1, "after"), (4, 1, "before"), (3, 2, "after"),
                                                 (4, 2, "before")])
def test_a_fresh_layer_is_the_plain_conv_with_its_weight(kernel, stride, extra, backend):
    torch.manual_seed(0)
    layer = DeformableConv2d(3, 5, kernel_size=kernel, stride=stride, backend=backend, even_padding=extra)
    x = torch.randn(2, 3, 9, 11)
    before, after = same_padding(kernel, extra)
    plain = F.conv2d(F.pad(x, (before, after, before, after)), layer.weight, layer.bias, stride=stride)
    torch.testing.assert_close(layer(x), plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels", CHANNELS, ids=["sample-then-project", "project-then-sample"])
@pytest.mark.parametrize("state", ["fresh", "deformed"])
@pytest.mark.parametrize("kernel", [3, 4])
def test_both_backends_give_the_same_outputs_and_gradients(kernel, state, channels):
    """"fresh": zero offsets put every sample on a pixel, where bilinear interpolation has a kink; the
    offset gradients (offset_mask.*) must still be torchvision's one-sided ones, not a rounding accident."""
    torch.manual_seed(0)
    layers = {name: DeformableConv2d(*channels, kernel, backend=name) for name in ("torchvision", "grid_sample")}
    if state == "deformed":  # non-zero offsets (a few pixels) and masks
        with torch.no_grad():
            layers["torchvision"].offset_mask.weight.normal_(std=0.3)
            layers["torchvision"].offset_mask.bias.normal_(std=1.0)
    layers["grid_sample"].load_state_dict(layers["torchvision"].state_dict())
    x = torch.randn(2, channels[0], 11, 9)
    projection = torch.randn(2, channels[1], 11, 9)
    results = {}
    for name, layer in layers.items():
        image = x.clone().requires_grad_()
        output = layer(image)
        (output * projection).sum().backward()
        grads = {n: p.grad for n, p in layer.named_parameters()} | {"input": image.grad}
        results[name] = output, grads
    (ours, ours_grads), (reference, reference_grads) = results["grid_sample"], results["torchvision"]
    assert_close_relative(ours, reference, 1e-5, "output")
    assert set(ours_grads) == {"weight", "bias", "offset_mask.weight", "offset_mask.bias", "input"}
    for name in ours_grads:
        assert_close_relative(ours_grads[name], reference_grads[name], 1e-4, f"grad {name}")


@pytest.mark.parametrize("kernel", [3, 4])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("height,width", [(8, 8), (9, 7), (13, 5)])
def test_output_shape_is_same_size_over_stride(kernel, stride, height, width):
    layer = DeformableConv2d(2, 3, kernel_size=kernel, stride=stride, backend="grid_sample")
    output = layer(torch.randn(1, 2, height, width))
    assert output.shape == (1, 3, math.ceil(height / stride), math.ceil(width / stride))


def test_auto_backend_follows_the_per_device_table():
    assert resolve_backend("auto", torch.device("cpu")) == FASTEST_BACKEND["cpu"] == "grid_sample"
    assert resolve_backend("auto", torch.device("cuda")) == FASTEST_BACKEND["cuda"]
    assert resolve_backend("torchvision", torch.device("cpu")) == "torchvision"


def test_unknown_backend_names_the_value_and_the_choices():
    with pytest.raises(ImrestoreError, match=r"expected one of 'auto', 'torchvision', 'grid_sample', found 'cudnn'"):
        DeformableConv2d(3, 3, backend="cudnn")


def test_unsupported_groups_and_offset_groups_are_explained():
    tensors = make_case(3, 1, 1, 1, 6, 6, torch.float32, with_mask=False)
    grouped_offset = tensors["offset"].repeat(1, 3, 1, 1)  # three offset groups
    with pytest.raises(ImrestoreError, match=r"offset: expected shape \(2, 18, 6, 6\).*found \(2, 54, 6, 6\)"):
        deform_conv2d_grid_sample(tensors["input"], grouped_offset, tensors["weight"], padding=1)
    grouped_weight = tensors["weight"][:, :1]  # groups=3 weight
    with pytest.raises(ImrestoreError, match=r"expected 3 input channels \(groups=1 only\)"):
        deform_conv2d_grid_sample(tensors["input"], tensors["offset"], grouped_weight, padding=1)
