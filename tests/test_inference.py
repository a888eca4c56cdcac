"""Tiled full-resolution inference: tiles reproduce untiled inference, memory is bounded by the tile, and the
self-ensemble is exact for an equivariant network."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from imrestore.errors import ImrestoreError
from imrestore.evaluation.inference import (
    InferenceConfig,
    blend_window,
    dihedral,
    inverse_dihedral,
    restore_images,
    tile_origins,
)
from imrestore.models.network import LayerNorm2d, ModelConfig, RestorationNet


def local_network() -> RestorationNet:
    """The paper's layout without its global channel attention (and one block): a receptive field of ~23
    px, so tiles whose overlap quarter exceeds that must reproduce untiled inference exactly."""
    torch.manual_seed(0)
    net = RestorationNet(ModelConfig(blocks=1, features=8, lka=False, attention=False))
    with torch.no_grad():  # trained-looking norms and real deformations, not the identity init
        for module in net.modules():
            if isinstance(module, LayerNorm2d):
                module.weight.uniform_(0.5, 2.0)
                module.bias.normal_(0, 0.1)
        for dcn in (net.head, net.tail):
            dcn.offset_mask.weight.normal_(std=0.01)
            dcn.offset_mask.bias.normal_(std=0.5)
    return with_trained_tail(net).eval()


def with_trained_tail(net: RestorationNet) -> RestorationNet:
    """A fresh network's tail is zero (the network is the identity); give it weights, so tiling can show.

    Scaled so the correction is a few hundredths of the image range, like a trained restorer's (torch's own
    conv init on unit-variance LayerNorm features would make it as large as the image itself)."""
    reference = nn.Conv2d(net.tail.weight.shape[1], net.tail.weight.shape[0], net.tail.kernel_size)
    with torch.no_grad():
        net.tail.weight.copy_(0.05 * reference.weight)
        net.tail.bias.copy_(0.05 * reference.bias)
    return net


@pytest.mark.parametrize("length,tile,overlap", [(64, 64, 16), (204, 64, 16), (152, 128, 96), (720, 256, 32)])
def test_tile_origins_cover_the_axis_on_the_network_grid(length, tile, overlap):
    origins = tile_origins(length, tile, overlap)
    assert origins[0] == 0 and origins[-1] + min(tile, length) == max(length, min(tile, length))
    assert all(origin % 4 == 0 for origin in origins)
    assert all(b - a <= tile - overlap for a, b in zip(origins, origins[1:]))  # neighbours share ≥ overlap


@pytest.mark.parametrize("length,tile,overlap", [(204, 64, 16), (152, 128, 96), (720, 256, 32), (260, 64, 60)])
def test_blend_weights_are_positive_everywhere_and_zero_at_inner_edges(length, tile, overlap):
    total = torch.zeros(length)
    for origin in tile_origins(length, tile, overlap):
        weight = blend_window(origin, tile, length, overlap)
        if origin > 0:  # the outer quarter of the overlap saw zero padding: it must not count
            assert torch.all(weight[:overlap // 4] == 0)
        else:
            assert weight[0] == 1  # the image border is not faded
        total[origin:origin + tile] += weight
    assert torch.all(total > 0)


def test_tiles_reproduce_untiled_inference_when_the_receptive_field_fits():
    net = local_network()
    images = torch.rand(2, 3, 150, 203)  # odd sizes: the padding to the network's multiple is exercised too
    untiled = restore_images(net, images, InferenceConfig(tile=None))
    tiled = restore_images(net, images, InferenceConfig(tile=128, overlap=96, tile_batch=3))
    assert tiled.shape == images.shape
    assert torch.allclose(tiled, untiled, atol=2e-6), (tiled - untiled).abs().max()


def test_too_little_overlap_is_visible_so_the_exact_match_above_is_not_trivial():
    net = local_network()
    images = torch.rand(1, 3, 150, 203)
    untiled = restore_images(net, images, InferenceConfig(tile=None))
    seams = restore_images(net, images, InferenceConfig(tile=64, overlap=0))
    assert (seams - untiled).abs().max() > 1e-3


def test_the_papers_network_tiled_stays_close_to_untiled():
    # Its channel attention pools globally, so per-tile pooling differs a little: close, not equal.
    torch.manual_seed(1)
    net = with_trained_tail(RestorationNet(ModelConfig(blocks=2, features=8))).eval()
    images = torch.rand(1, 3, 96, 160)
    untiled = restore_images(net, images, InferenceConfig(tile=None))
    assert torch.equal(restore_images(net, images, InferenceConfig(tile=160, overlap=32)), untiled)  # one tile
    tiled = restore_images(net, images, InferenceConfig(tile=64, overlap=32))
    assert 0 < (tiled - untiled).abs().max() < 1e-2


def test_memory_is_bounded_by_the_tile_not_the_image():
    net = local_network()
    seen: list[tuple[int, ...]] = []
    net.head.register_forward_hook(lambda module, args, output: seen.append(tuple(args[0].shape)))
    restore_images(net, torch.rand(1, 3, 300, 420), InferenceConfig(tile=64, overlap=16, tile_batch=2))
    assert seen and all(shape[0] <= 2 and shape[2] <= 64 and shape[3] <= 64 for shape in seen)
    assert len(seen) >= 20  # 300×420 needs many 64² tiles: the image was really cut up


@pytest.mark.parametrize("k", range(8))
def test_dihedral_transforms_invert(k):
    images = torch.rand(2, 3, 5, 7)
    assert torch.equal(inverse_dihedral(dihedral(images, k), k), images)


def test_the_eight_transforms_are_distinct():
    image = torch.arange(12.0).reshape(1, 1, 3, 4)
    assert len({(tuple(dihedral(image, k).shape), tuple(dihedral(image, k).flatten().tolist())) for k in range(8)}) == 8


def test_self_ensemble_is_exact_for_an_equivariant_network_and_averages_otherwise():
    pointwise = nn.Conv2d(3, 3, kernel_size=1)  # commutes with flips and rotations
    images = torch.rand(1, 3, 40, 52)
    plain = restore_images(pointwise, images, InferenceConfig(tile=None))
    ensemble = restore_images(pointwise, images, InferenceConfig(tile=None, self_ensemble=True))
    assert torch.allclose(plain, ensemble, atol=1e-6)

    torch.manual_seed(0)
    oriented = nn.Conv2d(3, 3, kernel_size=3, padding=1)  # not equivariant: the ensemble must change the output
    manual = sum(inverse_dihedral(oriented(dihedral(images, k)), k) for k in range(8)) / 8
    ensemble = restore_images(oriented, images, InferenceConfig(tile=None, self_ensemble=True))
    assert torch.allclose(ensemble, manual.detach(), atol=1e-6)
    assert not torch.allclose(ensemble, oriented(images).detach(), atol=1e-3)


def test_bf16_autocast_is_close_to_float32():
    net = local_network()
    images = torch.rand(1, 3, 64, 64)
    full = restore_images(net, images, InferenceConfig(tile=None, precision="fp32"))
    half = restore_images(net, images, InferenceConfig(tile=None, precision="bf16"))
    assert half.dtype == torch.float32
    assert 0 < (half - full).abs().max() < 5e-2


@pytest.mark.parametrize("settings,message", [
    ({"tile": 250}, "params.yaml: evaluate.tile must be null or a multiple of 4 ≥ 4, found 250"),
    ({"tile": 64, "overlap": 64}, "params.yaml: evaluate.overlap must be smaller than tile (64), found 64"),
    ({"overlap": 30}, "params.yaml: evaluate.overlap must be a multiple of 4 ≥ 0, found 30"),
    ({"tile_batch": 0}, "params.yaml: evaluate.tile_batch must be an integer ≥ 1, found 0"),
    ({"precision": "fp16"}, "params.yaml: evaluate.precision must be one of 'auto', 'bf16', 'fp32', found 'fp16'"),
    ({"self_ensemble": 1}, "params.yaml: evaluate.self_ensemble must be true or false, found 1"),
])
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ImrestoreError, match=f"^{re.escape(message)}$"):
        InferenceConfig.from_params(settings)
    with pytest.raises(ImrestoreError, match=re.escape(message.split(" must ")[1])):
        InferenceConfig(**{**{"tile": 256, "overlap": 32}, **settings})  # built directly: the same checks
