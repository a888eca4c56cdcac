"""imrestore.evaluation.metrics against scikit-image and independent numpy/scipy references, on real photographs.

The pairs are scikit-image's astronaut, chelsea and coffee photos (shipped with the package) against the
same photos after realistic degradations: sensor-like Gaussian noise, optical blur and low-quality JPEG.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from imrestore.errors import ImrestoreError
from imrestore.evaluation.metrics import (
    METRIC_NAMES,
    image_metrics,
    psnr,
    quantize,
    rgb_to_y,
    ssim,
    ssim_3d,
)

# Odd sizes on purpose: the last strip of rows and the last block of columns are partial.
HEIGHT, WIDTH = 297, 443
GAUSSIAN_TAPS = np.exp(-0.5 * ((np.arange(11) - 5) / 1.5) ** 2)
GAUSSIAN_TAPS /= GAUSSIAN_TAPS.sum()
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run this module's torch ops on one thread, and restore the setting afterwards.

    On a CPU shared with other busy processes (parallel test runs, CI neighbours), each multi-threaded op ends
    in a barrier that waits for a descheduled thread: these tests then took 90 s instead of 7 s. One thread
    costs ~20% on an idle machine and keeps the file fast on a busy one; the numbers do not depend on it.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """3×297×443×3 uint8: a portrait, a cat's fur, a cup on a table -- skin, texture, flat and bright areas."""
    return np.stack([photo[:HEIGHT, :WIDTH] for photo in (data.astronaut(), data.chelsea(), data.coffee())])


def gaussian_noise(images: np.ndarray, sigma: float = 12.0) -> np.ndarray:
    noise = np.random.default_rng(0).normal(0.0, sigma, images.shape)
    return np.clip(np.round(images + noise), 0, 255).astype(np.uint8)


def gaussian_blur(images: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    blurred = ndimage.gaussian_filter(images.astype(np.float64), (0, sigma, sigma, 0))
    return np.clip(np.round(blurred), 0, 255).astype(np.uint8)


def jpeg(images: np.ndarray, quality: int = 10) -> np.ndarray:
    decoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        decoded.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")))
    return np.stack(decoded)


DEGRADATIONS = {"noise": gaussian_noise, "blur": gaussian_blur, "jpeg": jpeg}


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """N×H×W×3 numpy → N×3×H×W torch, a permuted view, as the evaluate stage passes decoded images."""
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def skimage_ssim(target: np.ndarray, pred: np.ndarray) -> float:
    return structural_similarity(
        target, pred, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
        channel_axis=-1 if target.ndim == 3 else None,
    )


def basicsr_y(image: np.ndarray) -> np.ndarray:
    """BasicSR's to_y_channel(bgr2ycbcr(y_only=True)) formula, for RGB input, in float64."""
    rgb = image.astype(np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def basicsr_y_float32(image: np.ndarray) -> np.ndarray:
    """BasicSR's own arithmetic, float32 as it runs it: (img/255 · weights + 16) / 255 · 255."""
    scaled = image.astype(np.float32) / 255.0
    luma = scaled @ np.array([65.481, 128.553, 24.966], dtype=np.float32) + np.float32(16.0)
    return (luma / np.float32(255.0)) * np.float32(255.0)


def scipy_ssim_3d(target: np.ndarray, pred: np.ndarray) -> float:
    """NAFNet's _ssim_3d rebuilt with scipy: separable 11-tap Gaussian over H, W and C, edges replicated."""

    def blur(volume: np.ndarray) -> np.ndarray:
        for axis in range(3):
            volume = ndimage.correlate1d(volume, GAUSSIAN_TAPS, axis=axis, mode="nearest")
        return volume

    x, y = target.astype(np.float64), pred.astype(np.float64)
    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y, cov = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2, blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + C1) * (2 * cov + C2)) / ((mu_x**2 + mu_y**2 + C1) * (var_x + var_y + C2))
    return float(ssim_map.mean())


# ------------------------------------------------------------------------------------------------ quantize


def test_quantize_clamps_rounds_half_to_even_and_returns_uint8():
    # (k + 0.5)/255 · 255 is exactly k + 0.5 in float64 for every k (checked below), so this exercises ties.
    halves = torch.tensor([(k + 0.5) / 255 for k in range(255)], dtype=torch.float64)
    assert torch.equal(halves * 255, torch.arange(255, dtype=torch.float64) + 0.5)
    quantized = quantize(halves)
    assert quantized.dtype == torch.uint8
    expected_ties = torch.tensor([k if k % 2 == 0 else k + 1 for k in range(255)], dtype=torch.uint8)
    assert torch.equal(quantized, expected_ties)
    out_of_range = torch.tensor([-3.0, -1e-6, 0.0, 1.0, 1.0 + 1e-6, 7.5])
    assert quantize(out_of_range).tolist() == [0, 0, 0, 255, 255, 255]


def test_quantize_matches_basicsr_tensor2img_arithmetic_and_keeps_shape():
    # BasicSR: tensor.float().clamp_(0, 1) → numpy float32 · 255.0 → round (half to even) → uint8.
    generator = torch.Generator().manual_seed(0)
    outputs = torch.rand(2, 3, 64, 80, generator=generator) * 1.2 - 0.1
    expected = np.round(np.clip(outputs.numpy(), 0, 1) * 255.0).astype(np.uint8)
    quantized = quantize(outputs)
    assert quantized.shape == outputs.shape and quantized.device == outputs.device
    np.testing.assert_array_equal(quantized.numpy(), expected)
    assert torch.equal(quantize(outputs.to(torch.bfloat16)), quantize(outputs.to(torch.bfloat16).float()))


def test_quantize_rejects_integers_and_nan():
    with pytest.raises(ImrestoreError, match=r"float tensor .* found torch\.uint8"):
        quantize(torch.zeros(3, 4, 4, dtype=torch.uint8))
    outputs = torch.full((3, 4, 4), 0.5)
    outputs[1, 2, 3] = float("nan")
    with pytest.raises(ImrestoreError, match=r"NaN in the model output \(1 of 48 values\)"):
        quantize(outputs)


# ---------------------------------------------------------------------------------------------------- PSNR


@pytest.mark.parametrize("degrade", DEGRADATIONS.values(), ids=DEGRADATIONS.keys())
def test_psnr_matches_skimage_for_a_batch(photos, degrade):
    degraded = degrade(photos)
    values = psnr(to_tensor(degraded), to_tensor(photos))
    assert values.dtype == torch.float64 and values.shape == (len(photos),)
    expected = [peak_signal_noise_ratio(target, pred, data_range=255) for target, pred in zip(photos, degraded)]
    np.testing.assert_allclose(values.numpy(), expected, rtol=0, atol=1e-6)


def test_psnr_with_crop_border_matches_skimage_on_cropped_arrays(photos):
    degraded, border = gaussian_blur(photos), 4
    values = psnr(to_tensor(degraded), to_tensor(photos), crop_border=border)
    crop = np.s_[border:-border, border:-border]
    expected = [peak_signal_noise_ratio(t[crop], p[crop], data_range=255) for t, p in zip(photos, degraded)]
    np.testing.assert_allclose(values.numpy(), expected, rtol=0, atol=1e-6)
    # The border really is excluded: the uncropped values differ.
    assert np.all(values.numpy() != psnr(to_tensor(degraded), to_tensor(photos)).numpy())


def test_identical_images_give_infinite_psnr_and_unit_ssim(photos):
    images = to_tensor(photos)
    assert torch.isinf(psnr(images, images.clone())).all()
    metrics = image_metrics(images, images.clone())
    assert torch.isinf(metrics["psnr"]).all() and torch.isinf(metrics["psnr_y"]).all()
    for name in ("ssim", "ssim_y", "ssim_3d"):
        np.testing.assert_allclose(metrics[name].numpy(), 1.0, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------------- SSIM


@pytest.mark.parametrize("degrade", DEGRADATIONS.values(), ids=DEGRADATIONS.keys())
def test_ssim_matches_skimage_for_a_batch(photos, degrade):
    degraded = degrade(photos)
    values = ssim(to_tensor(degraded), to_tensor(photos))
    assert values.dtype == torch.float64 and values.shape == (len(photos),)
    expected = [skimage_ssim(target, pred) for target, pred in zip(photos, degraded)]
    # The protocol asks for 1e-4; float64 and the same valid-region mean give agreement to rounding.
    np.testing.assert_allclose(values.numpy(), expected, rtol=0, atol=1e-9)


def test_ssim_with_crop_border_matches_skimage_on_cropped_arrays(photos):
    degraded, border = jpeg(photos), 7
    values = ssim(to_tensor(degraded), to_tensor(photos), crop_border=border)
    crop = np.s_[border:-border, border:-border]
    expected = [skimage_ssim(t[crop], p[crop]) for t, p in zip(photos, degraded)]
    np.testing.assert_allclose(values.numpy(), expected, rtol=0, atol=1e-9)


def test_ssim_is_exact_in_flat_bright_regions(photos):
    # E[x²] − E[x]² cancels worst where the image is bright and flat: a sky-like 250 plateau with faint noise.
    target = photos[0].copy()
    target[: HEIGHT // 2] = 250
    pred = gaussian_noise(target[None], sigma=1.0)[0]
    value = ssim(to_tensor(pred[None]), to_tensor(target[None]))
    assert value.item() == pytest.approx(skimage_ssim(target, pred), abs=1e-9)


def test_single_image_and_memory_layout_do_not_change_the_result(photos):
    degraded = to_tensor(gaussian_noise(photos[:1]))
    target = to_tensor(photos[:1])
    batched = ssim(degraded, target)
    assert torch.equal(ssim(degraded[0], target[0]), batched)  # a 3×H×W image is a batch of one
    assert torch.equal(ssim(degraded.contiguous(), target.contiguous()), batched)
    assert torch.equal(psnr(degraded.contiguous(), target), psnr(degraded, target))


def test_smallest_image_the_window_fits(photos):
    target, pred = photos[0, :11, :11], gaussian_noise(photos[0, :11, :11][None])[0]
    assert ssim(to_tensor(pred[None]), to_tensor(target[None])).item() == pytest.approx(
        skimage_ssim(target, pred), abs=1e-9
    )


# ----------------------------------------------------------------------------------------------- Y channel


def test_rgb_to_y_is_basicsr_studio_swing_luma(photos):
    luma = rgb_to_y(to_tensor(photos))
    assert luma.dtype == torch.float64 and luma.shape == (len(photos), 1, HEIGHT, WIDTH)
    expected = np.stack([basicsr_y(photo) for photo in photos])[:, None]
    np.testing.assert_allclose(luma.numpy(), expected, rtol=0, atol=1e-12)
    # Reference points of BT.601 studio swing: black → 16, white → 235; not rounded.
    corners = torch.tensor([[[0, 255, 255]], [[0, 255, 0]], [[0, 255, 0]]], dtype=torch.uint8)
    np.testing.assert_allclose(rgb_to_y(corners)[0, 0].numpy(), [16.0, 235.0, 16 + 65.481], atol=1e-12)
    assert rgb_to_y(to_tensor(photos)[0]).shape == (1, HEIGHT, WIDTH)
    assert torch.equal(rgb_to_y(to_tensor(photos).double()), luma)


@pytest.mark.parametrize("degrade", DEGRADATIONS.values(), ids=DEGRADATIONS.keys())
def test_y_channel_metrics_match_skimage_on_basicsr_luma(photos, degrade):
    degraded, border = degrade(photos), 2
    metrics = image_metrics(to_tensor(degraded), to_tensor(photos), crop_border=border)
    crop = np.s_[border:-border, border:-border]
    target_y = [basicsr_y(photo[crop]) for photo in photos]
    pred_y = [basicsr_y(image[crop]) for image in degraded]
    expected_psnr = [peak_signal_noise_ratio(t, p, data_range=255) for t, p in zip(target_y, pred_y)]
    expected_ssim = [skimage_ssim(t, p) for t, p in zip(target_y, pred_y)]
    np.testing.assert_allclose(metrics["psnr_y"].numpy(), expected_psnr, rtol=0, atol=1e-6)
    np.testing.assert_allclose(metrics["ssim_y"].numpy(), expected_ssim, rtol=0, atol=1e-9)
    # BasicSR itself computes Y in float32; that moves PSNR by far less than 1e-4 dB.
    basicsr_psnr = [
        peak_signal_noise_ratio(basicsr_y_float32(t[crop]).astype(np.float64),
                                basicsr_y_float32(p[crop]).astype(np.float64), data_range=255)
        for t, p in zip(photos, degraded)
    ]
    np.testing.assert_allclose(metrics["psnr_y"].numpy(), basicsr_psnr, rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------------------- 3-D SSIM


@pytest.mark.parametrize("degrade", DEGRADATIONS.values(), ids=DEGRADATIONS.keys())
def test_ssim_3d_matches_scipy_reference_and_differs_from_ssim(photos, degrade):
    degraded = degrade(photos)
    values = ssim_3d(to_tensor(degraded), to_tensor(photos))
    expected = [scipy_ssim_3d(target, pred) for target, pred in zip(photos, degraded)]
    np.testing.assert_allclose(values.numpy(), expected, rtol=0, atol=1e-6)
    # A different protocol, not a rounding of the same one: the keys must not be interchangeable.
    per_channel = ssim(to_tensor(degraded), to_tensor(photos)).numpy()
    assert np.all(np.abs(values.numpy() - per_channel) > 1e-3)


def test_ssim_3d_equals_nafnet_conv3d_construction(photos):
    # NAFNet: Conv3d over the H×W×C volume, kernel = window ⊗ window ⊗ window, padding 5, mode 'replicate'.
    target = photos[1, 100:164, 200:250]
    pred = jpeg(target[None])[0]
    window = torch.from_numpy(GAUSSIAN_TAPS)
    kernel = (window[:, None, None] * window[None, :, None] * window[None, None, :])[None, None]

    def blur(volume: torch.Tensor) -> torch.Tensor:
        return F.conv3d(F.pad(volume[None, None], (5, 5, 5, 5, 5, 5), mode="replicate"), kernel)[0, 0]

    x, y = torch.from_numpy(target).double(), torch.from_numpy(pred).double()
    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y, cov = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2, blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + C1) * (2 * cov + C2)) / ((mu_x**2 + mu_y**2 + C1) * (var_x + var_y + C2))
    assert ssim_3d(to_tensor(pred[None]), to_tensor(target[None])).item() == pytest.approx(
        ssim_map.mean().item(), abs=1e-9
    )


def test_ssim_3d_with_crop_border(photos):
    degraded, border = gaussian_noise(photos[:2]), 3
    values = ssim_3d(to_tensor(degraded), to_tensor(photos[:2]), crop_border=border)
    crop = np.s_[border:-border, border:-border]
    expected = [scipy_ssim_3d(t[crop], p[crop]) for t, p in zip(photos[:2], degraded)]
    np.testing.assert_allclose(values.numpy(), expected, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------- image_metrics


def test_image_metrics_returns_every_protocol_per_image(photos):
    degraded = to_tensor(jpeg(photos))
    target = to_tensor(photos)
    metrics = image_metrics(degraded, target)
    assert tuple(metrics) == METRIC_NAMES == ("psnr", "ssim", "psnr_y", "ssim_y", "ssim_3d")
    for name, values in metrics.items():
        assert values.dtype == torch.float64 and values.shape == (len(photos),), name
    assert torch.equal(metrics["psnr"], psnr(degraded, target))
    assert torch.equal(metrics["ssim"], ssim(degraded, target))
    assert torch.equal(metrics["ssim_3d"], ssim_3d(degraded, target))
    # Results are ordinary tensors (not inference-mode ones): callers may modify them in place.
    metrics["psnr"] += 1.0
    empty = image_metrics(degraded[:0], target[:0])
    assert all(values.shape == (0,) and values.dtype == torch.float64 for values in empty.values())


# ------------------------------------------------------------------------------------------------- errors


def test_mismatched_shapes_are_reported_with_both_shapes(photos):
    images = to_tensor(photos)
    mismatch = r"same shape, found pred \(3, 3, 297, 443\) and target \(3, 3, 297, 440\)"
    with pytest.raises(ImrestoreError, match=mismatch):
        ssim(images, images[..., :440])
    with pytest.raises(ImrestoreError, match=r"N×3×H×W or 3×H×W, found shape \(1, 4, 8, 8\)"):
        psnr(torch.zeros(1, 4, 8, 8, dtype=torch.uint8), torch.zeros(1, 4, 8, 8, dtype=torch.uint8))
    with pytest.raises(ImrestoreError, match=r"found shape \(297, 443\)"):
        psnr(images[0, 0], images[0, 0])


def test_float_input_is_rejected_with_a_pointer_to_quantize(photos):
    images = to_tensor(photos)
    with pytest.raises(ImrestoreError, match=r"pred must be uint8 .* found torch\.float32: .*quantize\(\)"):
        image_metrics(images.float() / 255, images)
    with pytest.raises(ImrestoreError, match=r"target must be uint8 .* found torch\.float64"):
        ssim_3d(images, images.double())
    with pytest.raises(ImrestoreError, match=r"found dtype torch\.int64"):
        psnr(images.long(), images.long())
    with pytest.raises(ImrestoreError, match=r"must be a torch\.Tensor .* found ndarray"):
        psnr(photos, photos)


def test_images_too_small_for_the_window_or_the_crop(photos):
    images = to_tensor(photos)[:, :, :10, :22]
    with pytest.raises(ImrestoreError, match=r"at least 11×11 .* crop_border=0 .* found 10×22 \(from 10×22\)"):
        ssim(images, images)
    with pytest.raises(ImrestoreError, match=r"at least 11×11 .* crop_border=2 .* found 10×25 \(from 14×29\)"):
        image_metrics(to_tensor(photos)[:, :, :14, :29], to_tensor(photos)[:, :, :14, :29], crop_border=2)
    with pytest.raises(ImrestoreError, match=r"crop_border=5 leaves no pixels of a 10×22 image"):
        psnr(images, images, crop_border=5)
    with pytest.raises(ImrestoreError, match=r"crop_border must be a non-negative int, found -1"):
        psnr(images, images, crop_border=-1)
    assert torch.isfinite(psnr(images, images.flip(-1), crop_border=4)).all()  # PSNR needs no window


def test_rgb_to_y_rejects_other_shapes_and_dtypes():
    with pytest.raises(ImrestoreError, match=r"found \(1, 1, 8, 8\)"):
        rgb_to_y(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ImrestoreError, match=r"found torch\.int32"):
        rgb_to_y(torch.zeros(3, 8, 8, dtype=torch.int32))


# --------------------------------------------------------------------------------------------------- CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_gives_the_cpu_numbers(photos):
    degraded, target = to_tensor(jpeg(photos)), to_tensor(photos)
    on_cpu = image_metrics(degraded, target, crop_border=3)
    on_gpu = image_metrics(degraded.cuda(), target.cuda(), crop_border=3)
    for name in METRIC_NAMES:
        assert on_gpu[name].device.type == "cuda"
        np.testing.assert_allclose(on_gpu[name].cpu().numpy(), on_cpu[name].numpy(), rtol=0, atol=1e-9)
    assert torch.equal(quantize(degraded.cuda().float() / 255).cpu(), quantize(degraded.float() / 255))


def test_tile_sizes_and_image_groups_do_not_change_the_result(photos):
    # The GPU's tiles and groups, and odd ones, computed here on the CPU: the tiling is exact bookkeeping.
    from imrestore.evaluation.metrics import _mean_ssim_valid

    degraded, target = to_tensor(gaussian_noise(photos)), to_tensor(photos)
    reference = ssim(degraded, target)
    for tiles in ((128, 64), (7, 5), (300, 450)):
        np.testing.assert_allclose(_mean_ssim_valid(degraded, target, tiles=tiles).numpy(), reference.numpy(),
                                   rtol=0, atol=1e-12)
    one_by_one = torch.cat([ssim(degraded[i : i + 1], target[i : i + 1]) for i in range(len(photos))])
    np.testing.assert_allclose(one_by_one.numpy(), reference.numpy(), rtol=0, atol=1e-12)
