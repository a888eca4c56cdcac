"""PSNR and SSIM by the standard image-restoration protocol, in torch: batched, on any device, float64.

The standard protocol (BasicSR's `calculate_psnr` / `calculate_ssim`, which most restoration papers' Python
evaluation derives from) measures what a user would save to disk, not the raw network output:

1. the model output in [0, 1] is clamped, multiplied by 255 and rounded to uint8 (`quantize`);
2. `crop_border` pixels are cropped from each side of both images (0 for restoration; super-resolution papers
   crop `scale` pixels);
3. PSNR = 10·log10(255² / MSE) over all pixels and the three RGB channels, in float64. Identical images give
   +inf, as skimage and BasicSR do: a mean over images that contains one is inf, so average only finite
   values or report the count of perfect reconstructions separately;
4. SSIM uses an 11×11 Gaussian window with σ = 1.5, c1 = (0.01·255)², c2 = (0.03·255)², population
   (co)variances, is computed per RGB channel and the three channel means are averaged. Each mean is taken
   over the "valid" interior, where the window lies fully inside the image, i.e. 5 pixels are dropped on
   every side of the SSIM map. That is BasicSR's cv2 `filter2D(...)[5:-5, 5:-5]` and exactly what
   `skimage.metrics.structural_similarity(target, pred, gaussian_weights=True, sigma=1.5,
   use_sample_covariance=False, data_range=255, channel_axis=-1)` computes: skimage filters with reflect
   padding and then crops (win_size − 1) // 2 = 5 pixels, so the padding never reaches the mean. There is no
   border difference; tests/test_metrics.py checks agreement with skimage to 1e-9 on real photographs.

Which number is which -- always say which one a reported number is (BasicSR's standard metric protocol):

- "psnr", "ssim": the standard protocol above, RGB. Use these to compare runs of this project, and against
  papers that evaluate with BasicSR-style Python code (calculate_psnr / calculate_ssim, test_y_channel=False).
- "psnr_y", "ssim_y": the same on the luma channel Y of ITU-R BT.601 studio swing (`rgb_to_y`, BasicSR's
  `bgr2ycbcr(y_only=True)`, NOT rounded), data range still 255. Super-resolution papers report these
  (BasicSR `test_y_channel=True`, usually with crop_border = scale). BasicSR computes Y in float32; this
  module uses float64, which moves PSNR by well under 1e-4 dB. NAFNet's fork computes its Y-channel SSIM
  with replicate padding over the whole map (`_ssim_cly`) instead; that is not what "ssim_y" is.
- "ssim_3d": the MATLAB-style SSIM that NAFNet reports for GoPro and SIDD (`calculate_ssim(..., ssim3d=True)`,
  its default), written there to reproduce MATLAB's `ssim()` on an RGB array, which MPRNet's and Restormer's
  `evaluate_*.m` deblurring scripts call. The H×W×3 image is one volume; the window is the outer product of
  three 11-tap Gaussians (σ = 1.5) over (H, W, C); every dimension is padded by 5 with *replicate* padding
  (Conv3d padding_mode='replicate'), so along the 3 channels the window sees replicated channels; the SSIM
  map keeps its full H×W×3 size (no border crop) and the result is its mean. It is typically much higher
  than "ssim" on the same images (0.73-0.93 vs 0.57-0.58 for σ = 12 noise on the test photos; mmagic's
  NAFNet README gives 0.9253 per channel vs the paper's 3-D 0.9614 for the same SIDD outputs), so compare
  it only with 3-D numbers. Source followed: megvii-research/NAFNet basicsr/metrics/psnr_ssim.py
  (`_generate_3d_gaussian_kernel`, `_ssim_3d`); that code runs in float32 on CUDA and switches the data range
  to 1 when an image's maximum is <= 1, both of which this module does not copy (float64, range 255 always).

Why not torchmetrics' `structural_similarity_index_measure` (gaussian_kernel=True, sigma=1.5, kernel_size=11,
data_range=255, reduction='none', float64): measured on this project's 2-core CPU machine, it (a) averages
over the *full* SSIM map, including the 5-pixel reflect-padded border, so it differs from skimage/BasicSR by
1.3e-3 on a noisy 256×256 astronaut crop (0.39832 vs 0.39699), and (b) filters with a dense 11×11 kernel:
15.7-17.7 s for one 1280×720 RGB pair, against 0.89 s for skimage in the same run.

How SSIM is computed here instead: the separable Gaussian is applied as two banded matrix products (BLAS
GEMMs, ~40 GFLOP/s per core in float64) over strips of 16 rows and blocks of 32 columns, only where the
result is needed ("valid"), so no padding is required; all images of a small-image group and all channels
go through each op together. Working strip by strip keeps every temporary at a few MB: cache-resident, free
of the page faults that fresh 20-100 MB allocations cost, and bounded for any batch of 720p images. Only
four moment maps are filtered per channel -- x, y, x²+y² and xy -- because SSIM needs σx²+σy², never the two
variances apart; c1 and c2 are added before filtering (the Gaussian weights sum to 1), so the SSIM formula
after filtering is 9 elementwise ops. Everything is float64: at the 0-255 scale E[x²] − E[x]² cancels where
the image is flat and bright, and this same code in float32 is off by 3.7e-5 on the flat-bright test image
(1e-6 on textured photos) -- float32 GEMMs would be ~1.7× faster, but too close to the 1e-4 budget; float64
agrees with skimage to ~1e-14. On a GPU the same code runs unchanged, also in float64, with larger tiles and
groups.

Speed (`benchmarks/metric_speed.py`, four 1280×720 pairs, this project's 2-core CPU machine, idle): SSIM 40-57
ms per image, 9-11× faster than skimage; PSNR 3.6-5 ms, ~6×; one torch thread: 6.5× and 5.9× per core.
Every op is a parallel region, so on a CPU shared with other busy processes torch's threads wait on each
other at every op and the wall time can grow 10-100× (measured here next to two other torch jobs), while
single-threaded skimage only slows in proportion. Evaluating on a shared machine, call
`torch.set_num_threads(1)` (or set OMP_WAIT_POLICY=PASSIVE); the values do not depend on it.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from imrestore.errors import ImrestoreError

METRIC_NAMES: tuple[str, ...] = ("psnr", "ssim", "psnr_y", "ssim_y", "ssim_3d")

DATA_RANGE = 255.0
WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
WINDOW_RADIUS = WINDOW_SIZE // 2
C1 = (0.01 * DATA_RANGE) ** 2
C2 = (0.03 * DATA_RANGE) ** 2
# ITU-R BT.601 studio swing, RGB weights for R, G, B in [0, 255] (BasicSR's bgr2ycbcr lists them as B, G, R).
Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0

_F64 = torch.float64


# ------------------------------------------------------------------------------------------ quantization


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Model output in [0, 1] (float, any shape/device) → uint8 in [0, 255], the way it would be saved.

    Clamp to [0, 1], ×255, round half to even (torch.round, as numpy's round in BasicSR's tensor2img), cast.
    float16/bfloat16 are computed in float32 (BasicSR calls `.float()`); float64 stays float64.
    """
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        found = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise ImrestoreError(f"quantize expects a float tensor of model outputs in [0, 1], found {found}")
    if torch.isnan(images).any():
        raise ImrestoreError(
            f"quantize found NaN in the model output ({int(torch.isnan(images).sum())} of {images.numel()} values);"
            " a NaN has no 8-bit value, so the output cannot be measured"
        )
    if images.dtype in (torch.float16, torch.bfloat16):
        images = images.float()
    return images.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


# -------------------------------------------------------------------------------------------- validation


def _as_batch(images: object, name: str) -> torch.Tensor:
    """`images` as an N×3×H×W uint8 tensor (a 3×H×W one gets N = 1), or an ImrestoreError saying why not."""
    expected = "uint8 RGB images of shape N×3×H×W or 3×H×W"
    if not isinstance(images, torch.Tensor):
        raise ImrestoreError(f"{name} must be a torch.Tensor of {expected}, found {type(images).__name__}")
    if images.is_floating_point():
        raise ImrestoreError(
            f"{name} must be {expected} in [0, 255], found {images.dtype}: pass model outputs in [0, 1] through "
            "imrestore.evaluation.metrics.quantize() first (the standard protocol measures clamped, rounded 8-bit images)"
        )
    if images.dtype != torch.uint8:
        raise ImrestoreError(f"{name} must be {expected}, found dtype {images.dtype}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ImrestoreError(f"{name} must be {expected}, found shape {tuple(images.shape)}")
    return images


def _checked_pair(pred: object, target: object, crop_border: int, min_size: int, metric: str):
    """Validate a pred/target pair and return both as N×3×h×w uint8 views with `crop_border` cropped off."""
    pred, target = _as_batch(pred, "pred"), _as_batch(target, "target")
    if pred.shape != target.shape:
        raise ImrestoreError(
            f"pred and target must have the same shape, found pred {tuple(pred.shape)} and target "
            f"{tuple(target.shape)}"
        )
    if pred.device != target.device:
        raise ImrestoreError(f"pred and target must be on the same device, found {pred.device} and {target.device}")
    if isinstance(crop_border, bool) or not isinstance(crop_border, int) or crop_border < 0:
        raise ImrestoreError(f"crop_border must be a non-negative int, found {crop_border!r}")
    height, width = pred.shape[-2:]
    if 2 * crop_border >= min(height, width):
        raise ImrestoreError(
            f"crop_border={crop_border} leaves no pixels of a {height}×{width} image "
            f"(2·crop_border must be smaller than height and width)"
        )
    cropped_h, cropped_w = height - 2 * crop_border, width - 2 * crop_border
    if min(cropped_h, cropped_w) < min_size:
        raise ImrestoreError(
            f"{metric} needs images of at least {min_size}×{min_size} pixels (its Gaussian window is "
            f"{WINDOW_SIZE}×{WINDOW_SIZE}) after cropping crop_border={crop_border} from each side, found "
            f"{cropped_h}×{cropped_w} (from {height}×{width})"
        )
    if crop_border:
        crop = (..., slice(crop_border, height - crop_border), slice(crop_border, width - crop_border))
        pred, target = pred[crop], target[crop]
    return pred, target


# ----------------------------------------------------------------------------------- filtering machinery


def _tile_sizes(device: torch.device) -> tuple[int, int]:
    """(rows per strip, columns per block) of the banded GEMMs.

    On a CPU, 16 rows keep a strip's moment maps (~3 MB for a 720p image) in cache and the GEMMs at K = 26
    and 42, a few times the 11 multiply-adds a tap loop needs but at BLAS speed; 16×32 measured fastest for
    720p among 12-48 rows × 16-64 columns. On a GPU, launches dominate: large tiles.
    """
    return (16, 32) if device.type == "cpu" else (128, 64)


def _group_size(images: torch.Tensor) -> int:
    """How many images of N×C×H×W `images` to process together (small images: fewer, larger ops)."""
    per_image = max(1, images[0].numel()) if len(images) else 1
    budget = (1 << 20) if images.device.type == "cpu" else (1 << 23)  # elements: ~5 SIDD blocks, or one 720p
    return max(1, budget // per_image)


@functools.cache
def _gaussian_taps(device: torch.device) -> torch.Tensor:
    """The normalised 11-tap Gaussian, σ = 1.5: cv2.getGaussianKernel(11, 1.5), scipy's with truncate=3.5."""
    offsets = torch.arange(WINDOW_SIZE, dtype=_F64) - WINDOW_RADIUS
    taps = torch.exp(-0.5 * (offsets / WINDOW_SIGMA) ** 2)
    return (taps / taps.sum()).to(device)


@functools.cache
def _band(length: int, device: torch.device) -> torch.Tensor:
    """(length + 10) × length matrix whose column j holds the taps at rows j..j+10: `rows @ band` filters."""
    outputs = torch.arange(length)
    rows = outputs[:, None] + torch.arange(WINDOW_SIZE)[None, :]
    band = torch.zeros(length + WINDOW_SIZE - 1, length, dtype=_F64)
    band[rows, outputs[:, None].expand_as(rows)] = _gaussian_taps(torch.device("cpu"))
    return band.to(device)


@functools.cache
def _replicate_channel_mix(channels: int, device: torch.device) -> torch.Tensor:
    """channels × channels matrix: the 11-tap Gaussian along the channel axis with replicate padding.

    Padding 3 channels by 5 on each side repeats the first and last channel, so output channel c is a fixed
    weighted sum of the input channels; each row sums to 1.
    """
    taps = _gaussian_taps(torch.device("cpu"))
    mix = torch.zeros(channels, channels, dtype=_F64)
    for out_channel in range(channels):
        for tap in range(WINDOW_SIZE):
            source = min(max(out_channel + tap - WINDOW_RADIUS, 0), channels - 1)
            mix[out_channel, source] += taps[tap]
    return mix.to(device)


def _replicate_pad(images: torch.Tensor, pad: int) -> torch.Tensor:
    """N×C×H×W → N×C×(H+2·pad)×(W+2·pad), edge pixels repeated (index_select also works on uint8)."""
    height, width = images.shape[-2:]
    rows = torch.arange(-pad, height + pad, device=images.device).clamp_(0, height - 1)
    cols = torch.arange(-pad, width + pad, device=images.device).clamp_(0, width - 1)
    return images.index_select(-2, rows).index_select(-1, cols)


def _half_ssim_map(mean_x, mean_y, second_sum, cross, c1):
    """SSIM map / 2 from filtered moments where c1+c2 was added to x²+y² and (c1+c2)/2 to xy before filtering.

    With those constants folded in: second_sum − (μx²+μy²+c1) = σx²+σy²+c2 and cross − (2μxμy+c1)/2 =
    σxy + c2/2 = (2σxy+c2)/2, hence the factor 2 the caller applies. The moments are scratch and are reused.
    """
    luminance_num = torch.addcmul(c1, mean_x, mean_y, value=2.0)
    luminance_den = torch.addcmul(c1, mean_x, mean_x).addcmul_(mean_y, mean_y)
    half_structure_num = cross.sub_(luminance_num, alpha=0.5)
    structure_den = second_sum.sub_(luminance_den)
    return luminance_num.mul_(half_structure_num).div_(luminance_den.mul_(structure_den))


def _mean_ssim_valid(
    x: torch.Tensor, y: torch.Tensor, channel_mix: torch.Tensor | None = None, tiles: tuple[int, int] | None = None
) -> torch.Tensor:
    """Per-image mean of the SSIM map of two N×C×H×W batches (uint8 or float64, 0-255) over its valid interior.

    Strips of output rows are filtered vertically (band.T @ strip), then blocks of columns horizontally
    (overlapping column windows @ band), so each Gaussian tap is applied only where the window fits; the
    N·C planes go through every op together. `channel_mix`, if given, first filters the moment maps along the
    channel axis (the 3-D SSIM). Returns float64 [N].
    """
    count, channels, height, width = x.shape
    planes = count * channels
    device = x.device
    out_h, out_w = height - 2 * WINDOW_RADIUS, width - 2 * WINDOW_RADIUS
    strip_rows, block_cols = tiles or _tile_sizes(device)
    blocks = -(-out_w // block_cols)
    last_block_cols = out_w - (blocks - 1) * block_cols
    # Zero columns pad the width to whole blocks, so every strip is one batched GEMM and one pass of the SSIM
    # formula (each op is a parallel region, and on a busy machine each region costs a scheduler tick).
    padded_width = blocks * block_cols + 2 * WINDOW_RADIUS
    band_cols = _band(block_cols, device)
    c1 = torch.tensor(C1, dtype=_F64, device=device)
    shift = torch.tensor(C1 + C2, dtype=_F64, device=device)
    half_shift = torch.tensor((C1 + C2) / 2, dtype=_F64, device=device)
    totals = torch.zeros(count, dtype=_F64, device=device)
    for top in range(0, out_h, strip_rows):
        rows = min(strip_rows, out_h - top)
        in_rows = rows + 2 * WINDOW_RADIUS
        moments = torch.empty(4, planes, in_rows, padded_width, dtype=_F64, device=device)
        # Any finite filler works: the GEMMs multiply it by the band's zeros, and its outputs are discarded.
        moments[..., width:] = 0.0
        mx, my, second_sum, cross = moments[..., :width].unbind(0)
        mx.unflatten(0, (count, channels)).copy_(x[..., top : top + in_rows, :])
        my.unflatten(0, (count, channels)).copy_(y[..., top : top + in_rows, :])
        torch.addcmul(shift, mx, mx, out=second_sum).addcmul_(my, my)
        torch.addcmul(half_shift, mx, my, out=cross)
        if channel_mix is not None:
            moments = torch.matmul(channel_mix, moments.view(4, count, channels, -1)).view(moments.shape)
        stacked = moments.view(4 * planes, in_rows, padded_width)
        vertical = torch.bmm(_band(rows, device).T.expand(stacked.shape[0], rows, in_rows), stacked)
        n_rows = 4 * planes * rows
        flat = vertical.view(n_rows, padded_width)
        # Column windows overlap by 10: a strided view, read in place by the batched GEMM.
        windows = flat.as_strided(
            (blocks, n_rows, block_cols + 2 * WINDOW_RADIUS), (block_cols, padded_width, 1), flat.storage_offset()
        )
        filtered = torch.bmm(windows, band_cols.expand(blocks, *band_cols.shape))
        half_ssim = _half_ssim_map(*filtered.view(blocks, 4, planes * rows, block_cols).unbind(1), c1)
        half_ssim[-1, :, last_block_cols:] = 0.0  # outputs of the zero padding
        totals += half_ssim.view(blocks, count, channels * rows * block_cols).sum(dim=(0, 2))
    return totals * 2.0 / (channels * out_h * out_w)


def _sum_squared_error(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ (x − y)² per image of two N×C×H×W batches: float64 [N], a few rows at a time so temporaries stay small.

    uint8 differences are squared in float32 (half the memory traffic of float64, and exact: squares are
    integers ≤ 65025 < 2^24) and summed in float64, exactly (integer partial sums < 2^53). Float (luma)
    batches are computed in float64.
    """
    count, channels, height, width = x.shape
    # The sum ignores pixel order, so read H×W×C-backed images (numpy HWC arrays permuted to CHW) as H×W×C.
    if x.stride(1) < x.stride(3):
        x, y, row_dim = x.permute(0, 2, 3, 1), y.permute(0, 2, 3, 1), 1
    else:
        row_dim = 2
    # 64K elements (256 KB of float32) per chunk stay in L2: 2.8 ms per 720p image on one core, 4.4 ms at 256K.
    rows_per_chunk = max(1, (1 << 16) // (count * channels * width)) if x.device.type == "cpu" else height
    dtype = torch.float32 if x.dtype == torch.uint8 else _F64
    totals = torch.zeros(count, dtype=_F64, device=x.device)
    for top in range(0, height, rows_per_chunk):
        rows = min(rows_per_chunk, height - top)
        squares = x.narrow(row_dim, top, rows).to(dtype, copy=True, memory_format=torch.contiguous_format)
        squares.sub_(y.narrow(row_dim, top, rows)).square_()
        totals += squares.view(count, -1).sum(1, dtype=_F64)
    return totals


def _psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    mse = _sum_squared_error(x, y) / x[0].numel()
    # mse == 0 gives log10(inf) = inf, like skimage and BasicSR; torch does not warn.
    return 10.0 * torch.log10(DATA_RANGE**2 / mse)


def _ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _mean_ssim_valid(x, y)


def _ssim_3d(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Replicate-padding by the window radius makes the valid filter return the full-size map, as Conv3d does.
    mix = _replicate_channel_mix(x.shape[1], x.device)
    return _mean_ssim_valid(_replicate_pad(x, WINDOW_RADIUS), _replicate_pad(y, WINDOW_RADIUS), channel_mix=mix)


def _luma(images: torch.Tensor) -> torch.Tensor:
    """N×3×H×W (uint8 or float, 0-255) → N×1×H×W float64 BT.601 studio-swing luma, unrounded."""
    red, green, blue = images.to(_F64).unbind(1)
    luma = red * Y_WEIGHTS[0]
    luma.add_(green, alpha=Y_WEIGHTS[1]).add_(blue, alpha=Y_WEIGHTS[2]).div_(DATA_RANGE).add_(Y_OFFSET)
    return luma.unsqueeze(1)


def _all_metrics(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    x_luma, y_luma = _luma(x), _luma(y)
    return {"psnr": _psnr(x, y), "ssim": _ssim(x, y), "psnr_y": _psnr(x_luma, y_luma),
            "ssim_y": _ssim(x_luma, y_luma), "ssim_3d": _ssim_3d(x, y)}


def _by_group(compute, names: tuple[str, ...], pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run `compute(pred_group, target_group) -> {name: [g]}` over groups of images; {name: float64 [N]}."""
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    group = _group_size(pred)
    # inference_mode inside only: concatenating its results outside yields ordinary tensors callers may modify.
    with torch.inference_mode():
        for start in range(0, len(pred), group):
            for name, values in compute(pred[start : start + group], target[start : start + group]).items():
                parts[name].append(values)
    return {
        name: torch.cat(values) if values else torch.empty(0, dtype=_F64, device=pred.device)
        for name, values in parts.items()
    }


# -------------------------------------------------------------------------------------------- public API


def psnr(pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """PSNR in dB of uint8 RGB images (N×3×H×W or 3×H×W), data range 255: float64 [N] on their device.

    Identical images give +inf (as skimage's peak_signal_noise_ratio and BasicSR's calculate_psnr).
    """
    pred, target = _checked_pair(pred, target, crop_border, 1, "PSNR")
    return _by_group(lambda x, y: {"psnr": _psnr(x, y)}, ("psnr",), pred, target)["psnr"]


def ssim(pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """SSIM of uint8 RGB images by the standard protocol (see the module docstring): float64 [N].

    Equals skimage's structural_similarity(target, pred, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255, channel_axis=-1) and BasicSR's calculate_ssim.
    """
    pred, target = _checked_pair(pred, target, crop_border, WINDOW_SIZE, "SSIM")
    return _by_group(lambda x, y: {"ssim": _ssim(x, y)}, ("ssim",), pred, target)["ssim"]


def ssim_3d(pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """MATLAB-style 3-D SSIM over H×W×C that NAFNet reports (see the module docstring): float64 [N].

    Not comparable with `ssim`: replicate padding, an 11×11×11 window across the channels and no border crop.
    """
    pred, target = _checked_pair(pred, target, crop_border, 1, "3-D SSIM")
    return _by_group(lambda x, y: {"ssim_3d": _ssim_3d(x, y)}, ("ssim_3d",), pred, target)["ssim_3d"]


def rgb_to_y(images: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 255] (uint8 or float; N×3×H×W or 3×H×W) → float64 luma Y, N×1×H×W (or 1×H×W).

    Y = 16 + (65.481·R + 128.553·G + 24.966·B) / 255: BasicSR's bgr2ycbcr(y_only=True) scaled to [0, 255],
    ITU-R BT.601 studio swing (Y in [16, 235]), not rounded. Float input is taken to be in [0, 255] as is.
    """
    if not isinstance(images, torch.Tensor):
        raise ImrestoreError(f"rgb_to_y expects a torch.Tensor of RGB images, found {type(images).__name__}")
    if images.dim() not in (3, 4) or images.shape[-3] != 3:
        raise ImrestoreError(f"rgb_to_y expects RGB images of shape N×3×H×W or 3×H×W, found {tuple(images.shape)}")
    if not (images.is_floating_point() or images.dtype == torch.uint8):
        raise ImrestoreError(f"rgb_to_y expects uint8 or float images in [0, 255], found {images.dtype}")
    return _luma(images) if images.dim() == 4 else _luma(images.unsqueeze(0))[0]


def image_metrics(pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0) -> dict[str, torch.Tensor]:
    """All of METRIC_NAMES for uint8 RGB images: {"psnr", "ssim", "psnr_y", "ssim_y", "ssim_3d"} → float64 [N].

    Validates once, then works through the batch a few images at a time (one at a time for 720p), so a batch
    needs only tens of MB beyond its own storage.
    """
    pred, target = _checked_pair(pred, target, crop_border, WINDOW_SIZE, "SSIM")
    return _by_group(_all_metrics, METRIC_NAMES, pred, target)


def pair_metrics(pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0) -> dict[str, float]:
    """`image_metrics` of one uint8 3×H×W pair, as plain floats: one row of a per-image table."""
    return {name: float(value[0]) for name, value in image_metrics(pred[None], target[None], crop_border).items()}


def hwc_to_tensor(image: np.ndarray) -> torch.Tensor:
    """A decoded H×W×3 uint8 array as the 3×H×W tensor the metrics and networks take: a view of the array,
    or of a copy when the array is read-only (PIL's are, and torch.from_numpy warns about those)."""
    return torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)
