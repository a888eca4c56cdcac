"""Classical restoration baselines: what a learned model has to beat to have earned its parameters.

Every baseline maps a degraded uint8 H×W×3 RGB image to a restored uint8 H×W×3 RGB image, is deterministic
(no random numbers anywhere) and uses scikit-image's reference implementations, so a reader can tell what
was run from the name alone. `identity` (the degraded input itself) is the zero line for both tasks: a
method that scores below it has made the images worse.

Denoising (SIDD): the three classic families scikit-image ships, each driven by the noise level that
`estimate_sigma` (Donoho's wavelet median-absolute-deviation estimate) reads off the image itself, so there
is no per-dataset tuning:
- `nl_means`  non-local means (Buades, Coll, Morel 2005), in scikit-image's fast mode;
- `wavelet`   BayesShrink soft thresholding (Chang, Yu, Vetterli 2000) in YCbCr;
- `tv`        total-variation denoising (Rudin, Osher, Fatemi 1992) solved with Chambolle's projection (2004).

Deblurring (GoPro): GoPro blur is spatially varying camera shake and comes with no kernel, so a non-blind
method would need a kernel nobody has. A single fixed point-spread function is the honest cheap choice:
- `unsharp_mask`     the floor: every photo editor's sharpening;
- `richardson_lucy`  Richardson–Lucy deconvolution (Richardson 1972, Lucy 1974), per channel, with one fixed
                     isotropic Gaussian PSF of σ = 0.75 px and 5 iterations: small on purpose, since a wrong
                     kernel rings and the real one is unknown (see `RL_PSF_SIGMA_PX`).
Expect both to stay close to `identity` on camera shake: that gap is what a learned model earns.

`estimate_sigma` and `denoise_wavelet` need PyWavelets (`pywt`), an optional dependency of scikit-image.

Parameters are module constants with the reason for each value. They were checked on scikit-image's
`motorcycle_left` / `motorcycle_right` photographs, which are neither in the embedded sample nor in the tests,
and never on any benchmark's test split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from skimage.filters import unsharp_mask
from skimage.restoration import (
    denoise_nl_means,
    denoise_tv_chambolle,
    denoise_wavelet,
    estimate_sigma,
    richardson_lucy,
)

from imrestore.errors import ImrestoreError

Baseline = Callable[[np.ndarray], np.ndarray]

# Smallest side accepted. `estimate_sigma` reads σ off the finest wavelet band (a median over its coefficients)
# and NL-means compares 5×5 patches in a 13×13 window; on smaller images the methods still run, but σ̂ comes
# from a few dozen numbers and scikit-image warns about the shape, so a tiny input is refused as
# the mistake it almost certainly is.
MIN_SIDE_PX = 16

# --------------------------------------------------------------------------------------------------------------
# Denoising
# --------------------------------------------------------------------------------------------------------------

# scikit-image's NL-means gallery example: a 5×5 patch, a 13×13 search window (distance 6) and a filtering
# strength h of 0.8·σ in fast mode, where passing σ subtracts the expected noise from patch distances. Larger
# windows gain little on photographs and cost time quadratically.
NL_MEANS_PATCH_SIZE = 5
NL_MEANS_PATCH_DISTANCE = 6
NL_MEANS_H_PER_SIGMA = 0.8

# ROF minimises weight·TV(u) + ½‖u − f‖²: scaling the noise by c scales the weight that balances the two terms
# by about c, so the weight is tied to σ̂ linearly. scikit-image's gallery denoises σ ≈ 0.155 with weight 0.1
# (≈0.65σ). On Gaussian noise of σ = 10–50 (of 255) added to the motorcycle photographs the best factor grew
# from 0.5 to 0.8; 0.6 stays within 0.3 dB of the best over that range and on SIDD-like raw noise.
TV_WEIGHT_PER_SIGMA = 0.6

# --------------------------------------------------------------------------------------------------------------
# Deblurring
# --------------------------------------------------------------------------------------------------------------

# Radius ≈ the scale of the detail to restore, amount the gain on it. Radius 2 px, amount 0.5 gained a little
# on GoPro-like camera shake of the motorcycle photographs (+0.1 dB over identity) and 1.3 dB on Gaussian blur;
# stronger sharpening adds halos and boosts noise: amount 1 lost 0.4 dB and amount 2 lost 2 dB on the shake.
UNSHARP_RADIUS_PX = 2.0
UNSHARP_AMOUNT = 0.5

# A small isotropic Gaussian PSF (σ = 0.75 px, a 7×7 kernel out to 4σ) and 5 iterations. Camera shake is a
# long, thin, spatially varying kernel; a wide Gaussian stand-in (σ = 1.5–2 px) rings at every edge and lost
# 0.5–1.5 dB against identity on GoPro-like shake of the motorcycle photographs, while σ = 0.75 px was neutral
# on average (+0.25 dB on mild shake, −0.24 on medium, −0.05 on strong) and still gains 0.4–2.3 dB on
# Gaussian blur of σ = 0.75–2 px. Richardson–Lucy is an early-stopped iteration: the count is its regulariser, and more iterations only
# amplified the PSF mismatch on shake.
RL_PSF_SIGMA_PX = 0.75
RL_PSF_RADIUS_PX = 3
RL_ITERATIONS = 5


def _to_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) / 255.0


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Float [0, 1] → uint8; np.rint (half to even) keeps results identical across platforms."""
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _noise_sigma(image: np.ndarray) -> float:
    """The noise standard deviation of a float [0, 1] RGB image, averaged over the channels."""
    return float(estimate_sigma(image, channel_axis=-1, average_sigmas=True))


def identity(image: np.ndarray) -> np.ndarray:
    """The degraded input, unchanged (a copy, so callers may not alias the input)."""
    return image.copy()


def nl_means(image: np.ndarray) -> np.ndarray:
    """Non-local means, h = 0.8·σ̂ with σ̂ estimated from the image itself."""
    x = _to_float(image)
    sigma = _noise_sigma(x)
    out = denoise_nl_means(
        x,
        h=NL_MEANS_H_PER_SIGMA * sigma,
        sigma=sigma,
        patch_size=NL_MEANS_PATCH_SIZE,
        patch_distance=NL_MEANS_PATCH_DISTANCE,
        fast_mode=True,
        channel_axis=-1,
    )
    return _to_uint8(out)


def wavelet(image: np.ndarray) -> np.ndarray:
    """BayesShrink soft wavelet thresholding in YCbCr, σ estimated per channel by scikit-image."""
    out = denoise_wavelet(
        _to_float(image),
        method="BayesShrink",
        mode="soft",
        rescale_sigma=True,
        convert2ycbcr=True,
        channel_axis=-1,
    )
    return _to_uint8(out)


def total_variation(image: np.ndarray) -> np.ndarray:
    """Chambolle's TV denoising with weight = TV_WEIGHT_PER_SIGMA·σ̂."""
    x = _to_float(image)
    out = denoise_tv_chambolle(x, weight=TV_WEIGHT_PER_SIGMA * _noise_sigma(x), channel_axis=-1)
    return _to_uint8(out)


def sharpen_unsharp_mask(image: np.ndarray) -> np.ndarray:
    """Unsharp masking: x + amount·(x − Gaussian_radius(x)), per channel."""
    # channel_axis=2, not -1: scikit-image ≤ 0.26 slices the wrong axis for a negative channel_axis here and
    # returns mostly uninitialised memory (scikit-image issue #7264).
    out = unsharp_mask(_to_float(image), radius=UNSHARP_RADIUS_PX, amount=UNSHARP_AMOUNT, channel_axis=2)
    return _to_uint8(out)


def gaussian_psf(sigma: float = RL_PSF_SIGMA_PX, radius: int = RL_PSF_RADIUS_PX) -> np.ndarray:
    """A (2·radius+1)² isotropic Gaussian kernel that sums to 1."""
    axis = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (axis / sigma) ** 2)
    psf = np.outer(g, g)
    return psf / psf.sum()


def deconvolve_richardson_lucy(image: np.ndarray) -> np.ndarray:
    """Richardson–Lucy per channel with the fixed Gaussian PSF `gaussian_psf()` (σ = RL_PSF_SIGMA_PX).

    scikit-image convolves with zero padding, which reads the frame border as a dark edge that the
    iterations then try to explain; reflecting a margin of a few kernel radii around the image and cropping
    it off afterwards keeps the border as clean as the centre.
    """
    psf = gaussian_psf()
    margin = 3 * RL_PSF_RADIUS_PX
    x = np.pad(_to_float(image), ((margin, margin), (margin, margin), (0, 0)), mode="reflect")
    out = np.stack(
        [richardson_lucy(x[..., c], psf, num_iter=RL_ITERATIONS, clip=True) for c in range(x.shape[-1])],
        axis=-1,
    )
    return _to_uint8(out[margin:-margin, margin:-margin])


BASELINES: dict[str, dict[str, Baseline]] = {
    "deblur": {
        "identity": identity,
        "unsharp_mask": sharpen_unsharp_mask,
        "richardson_lucy": deconvolve_richardson_lucy,
    },
    "denoise": {
        "identity": identity,
        "nl_means": nl_means,
        "wavelet": wavelet,
        "tv": total_variation,
    },
}


def _check_task(task: str) -> dict[str, Baseline]:
    if task not in BASELINES:
        raise ImrestoreError(f"baseline task: expected one of {', '.join(BASELINES)}, found {task!r}")
    return BASELINES[task]


def baseline_names(task: str) -> tuple[str, ...]:
    """The baselines available for `task` ("deblur" or "denoise"), `identity` first."""
    return tuple(_check_task(task))


def check_baselines(task: str, names: Iterable[str]) -> tuple[str, ...]:
    """Validate a list of baseline names for `task` (as read from params) and return it as a tuple.

    A single string is read as one name, so `baselines: tv` in YAML means what its author meant.
    """
    available = _check_task(task)
    chosen = (names,) if isinstance(names, str) else tuple(names)
    unknown = [name for name in chosen if not isinstance(name, str) or name not in available]
    if unknown:
        raise ImrestoreError(
            f"{task} baselines: expected names from {', '.join(available)}, "
            f"found unknown {', '.join(repr(name) for name in unknown)}"
        )
    repeated = sorted({name for name in chosen if chosen.count(name) > 1})
    if repeated:
        raise ImrestoreError(f"{task} baselines: expected each name once, found {', '.join(repeated)} repeated")
    return chosen


def check_image(image: object, what: str = "image") -> np.ndarray:
    """Raise ImrestoreError unless `image` is a uint8 H×W×3 array with sides ≥ MIN_SIDE_PX."""
    if not isinstance(image, np.ndarray):
        raise ImrestoreError(f"{what}: expected a numpy uint8 H×W×3 RGB array, found {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImrestoreError(f"{what}: expected dtype uint8 (RGB, 0–255), found {image.dtype}")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ImrestoreError(f"{what}: expected shape H×W×3 (RGB), found {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE_PX:
        raise ImrestoreError(f"{what}: expected height and width ≥ {MIN_SIDE_PX} px, found {image.shape}")
    return image


def run_baseline(task: str, name: str, image: np.ndarray) -> np.ndarray:
    """Restore one degraded uint8 H×W×3 RGB image with baseline `name` of `task`; returns uint8 H×W×3."""
    (name,) = check_baselines(task, [name])
    check_image(image, f"{task} baseline {name} input")
    return BASELINES[task][name](image)
