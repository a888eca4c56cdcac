"""Full-resolution inference: overlapping tiles blended smoothly, so memory stays bounded on any image size.

    restored = restore_image(net, image, InferenceConfig(tile=256, overlap=32))

The image is padded once to the network's `size_multiple` (reflect, as the network itself would: 4 for the
paper's network, 16 for a 4-level NAFNet), then cut into `tile`×`tile` windows whose origins are multiples of
that same number, so every tile sees the stride-2 grid the untiled network sees. Neighbouring tiles share at
least `overlap` pixels; across the shared band each tile's weight is 0 on the outer quarter (those pixels
saw zero padding, not image), then rises as a raised cosine; the weights are normalised, so the result is a
convex blend with no seams. Where the network's receptive field fits in a quarter of the overlap, tiles
reproduce untiled inference to float precision (the tests check this).

Neither network is fully local: the paper's channel attention and NAFNet's simplified channel attention pool
over the whole input, so per tile they pool over that tile. On 720p frames that costs a fraction of a dB
against untiled inference (README, "Evaluation"). NAFNet's TLC (test-time local converter) is the known
remedy: it replaces the global pool by a local one the size of the training crop.

Tiles are run `tile_batch` at a time, in bf16 autocast on CUDA. `self_ensemble` averages the 8 dihedral
transforms (flips × 90° rotations) of the input, each restored and transformed back: BasicSR's `test_x8`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from imrestore.errors import ImrestoreError
from imrestore.models.layers import pad_to_multiple
# The paper network's grid (two stride-2 stages), the granularity params are checked at; a network with a
# coarser grid (NAFNet: 16) is checked again when it meets its tiles.
from imrestore.models.network import DOWNSCALE
from imrestore.params import BOOLEAN, Rule, Section, choice, integer, invalid, optional, param


@dataclass(frozen=True)
class InferenceConfig(Section):
    """How full images pass through the network: the inference keys of `evaluate` (and `imrestore restore`'s
    flags). Sizes are multiples of the paper network's grid; a network with a coarser grid (NAFNet: 16) is
    checked again when it meets its tiles."""

    SECTION = "evaluate"

    # tile side in pixels; None: the whole image at once
    tile: int | None = param(256, optional(integer(minimum=DOWNSCALE, multiple_of=DOWNSCALE)))
    overlap: int = param(32, integer(minimum=0, multiple_of=DOWNSCALE))  # pixels neighbouring tiles share
    tile_batch: int = param(4, integer(minimum=1))  # tiles per forward pass
    self_ensemble: bool = param(False, BOOLEAN)  # ×8 geometric self-ensemble: 8× the compute for a small gain
    precision: str = param("auto", choice("auto", "bf16", "fp32"))  # auto: bf16 autocast on CUDA, fp32 on CPU

    @classmethod
    def check_consistency(cls, values: dict[str, Any], fail: Callable[[str, str], None]) -> None:
        if values["tile"] is not None and values["overlap"] >= values["tile"]:
            fail("overlap", f"smaller than tile ({values['tile']})")


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis of a padded image: multiples of the stride, the last one flush with the end.

    `length` and `tile` are multiples of DOWNSCALE, so every origin is too; the last tile may share more
    than `overlap` with its neighbour, never less.
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    origins = list(range(0, length - tile, stride))
    return origins + [length - tile]


def blend_window(start: int, size: int, length: int, overlap: int) -> torch.Tensor:
    """Per-axis blending weight of a tile [start, start+size) on an axis of `length`.

    At each edge that has a neighbour (image borders are never faded) the outer quarter of the overlap gets
    weight 0, because those outputs saw the tile's zero padding instead of the image; the middle half of the
    overlap rises as a raised cosine; the rest is 1. So a pixel within overlap/4 of a tile edge comes from
    the neighbour alone, and tiles match untiled inference wherever the receptive field is within overlap/4.
    """
    weight = torch.ones(size, dtype=torch.float32)
    if overlap == 0:
        return weight
    margin = overlap // 4
    ramp_len = overlap - 2 * margin
    centres = torch.arange(ramp_len, dtype=torch.float32) + 0.5  # pixel centres: no exact 0 or 1 in the ramp
    profile = torch.cat([torch.zeros(margin), 0.5 - 0.5 * torch.cos(math.pi * centres / ramp_len)])[:size]
    if start > 0:
        weight[:len(profile)] = profile
    if start + size < length:
        weight[size - len(profile):] = torch.minimum(weight[size - len(profile):], profile.flip(0))
    return weight


def _autocast(device: torch.device, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _run(net: nn.Module, batch: torch.Tensor, precision: str) -> torch.Tensor:
    with _autocast(batch.device, precision):
        return net(batch).float()


def restore_tiled(net: nn.Module, images: torch.Tensor, config: InferenceConfig) -> torch.Tensor:
    """Restore N×3×H×W images (on the network's device) by overlapping tiles; float32 result, same shape."""
    height, width = images.shape[-2:]
    if config.tile is None:
        return torch.cat([_run(net, chunk, config.precision) for chunk in images.split(config.tile_batch)])
    multiple = getattr(net, "size_multiple", DOWNSCALE)
    for key in ("tile", "overlap"):
        if getattr(config, key) % multiple:
            raise ImrestoreError(f"{key} {getattr(config, key)} must be a multiple of {multiple} for this network "
                                 f"(its {type(net).__name__} pads to multiples of {multiple}; tiles on another grid "
                                 "would not match untiled inference)")
    padded = pad_to_multiple(images, multiple)
    full_h, full_w = padded.shape[-2:]
    tile_h, tile_w = min(config.tile, full_h), min(config.tile, full_w)
    # The grid is the product of the per-axis origins and the weights are per-axis products, so each axis'
    # windows are built once, and the total weight is the outer product of the per-axis sums.
    rows = {y: blend_window(y, tile_h, full_h, config.overlap).to(images.device)
            for y in tile_origins(full_h, tile_h, config.overlap)}
    cols = {x: blend_window(x, tile_w, full_w, config.overlap).to(images.device)
            for x in tile_origins(full_w, tile_w, config.overlap)}
    row_total = torch.zeros(full_h, device=images.device)
    col_total = torch.zeros(full_w, device=images.device)
    for y, window in rows.items():
        row_total[y:y + tile_h] += window
    for x, window in cols.items():
        col_total[x:x + tile_w] += window
    total_weight = row_total[:, None] * col_total[None, :]
    windows = [(n, y, x) for n in range(len(images)) for y in rows for x in cols]
    output = torch.zeros(padded.shape, dtype=torch.float32, device=images.device)
    for chunk in _chunks(windows, config.tile_batch):
        batch = torch.stack([padded[n, :, y:y + tile_h, x:x + tile_w] for n, y, x in chunk])
        restored = _run(net, batch, config.precision)
        for (n, y, x), tile in zip(chunk, restored):
            output[n, :, y:y + tile_h, x:x + tile_w] += tile * (rows[y][:, None] * cols[x][None, :])
    return (output / total_weight)[..., :height, :width]


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def dihedral(images: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 dihedral transforms (k % 4 quarter turns, then a horizontal flip when k ≥ 4)."""
    out = torch.rot90(images, k % 4, dims=(-2, -1))
    return out.flip(-1) if k >= 4 else out


def inverse_dihedral(images: torch.Tensor, k: int) -> torch.Tensor:
    out = images.flip(-1) if k >= 4 else images
    return torch.rot90(out, -(k % 4), dims=(-2, -1))


@torch.inference_mode()
def restore_images(net: nn.Module, images: torch.Tensor, config: InferenceConfig) -> torch.Tensor:
    """Restore float N×3×H×W (or 3×H×W) images in [0, 1]: tiles, optional self-ensemble; float32, unclamped,
    on the input's device. The network must already be in eval mode on the device it should run on."""
    single = images.ndim == 3
    if single:
        images = images[None]
    if images.ndim != 4 or images.shape[1] != 3:
        raise ImrestoreError(f"expected images of shape N×3×H×W or 3×H×W, found {tuple(images.shape)}")
    device = next(net.parameters()).device
    source_device = images.device
    images = images.to(device, dtype=torch.float32)
    if config.self_ensemble:
        restored = sum(inverse_dihedral(restore_tiled(net, dihedral(images, k), config), k) for k in range(8)) / 8
    else:
        restored = restore_tiled(net, images, config)
    restored = restored.to(source_device)
    return restored[0] if single else restored


# torch parses more (mps, meta, xpu, cpu:1, …) than inference runs on: those would fail later, deep in torch.
DEVICE = Rule("auto, cpu, cuda or cuda:N",
              lambda v: isinstance(v, str) and bool(re.fullmatch(r"auto|cpu|cuda(:\d+)?", v)))


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when there is one, else the CPU; otherwise cpu, cuda or cuda:N, present on this machine."""
    if not DEVICE.accepts(name):
        raise invalid("device", DEVICE.expected, name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ImrestoreError(f"device {name!r} was asked for, but this machine has no CUDA GPU (use cpu or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ImrestoreError(f"device {name!r} was asked for, but this machine has {torch.cuda.device_count()} "
                             f"CUDA GPU(s): cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def prepare_network(net: nn.Module, device: torch.device) -> nn.Module:
    """Eval mode on `device`; channels-last on CUDA, where cuDNN's convolutions prefer it."""
    net = net.eval().to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    return net
