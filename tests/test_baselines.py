"""Classical baselines on real photographs shipped with scikit-image, degraded with known noise and blur."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio

from imrestore.errors import ImrestoreError
from imrestore.evaluation.baselines import BASELINES, baseline_names, check_baselines, run_baseline

ALL_BASELINES = [(task, name) for task, methods in BASELINES.items() for name in methods]
PHOTOS = {"astronaut": skimage.data.astronaut, "coffee": skimage.data.coffee, "chelsea": skimage.data.chelsea}


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    return peak_signal_noise_ratio(reference, image, data_range=255)


@pytest.fixture(scope="module")
def clean() -> dict[str, np.ndarray]:
    """192×256 crops from the middle of each photo, where there is texture and edges."""
    crops = {}
    for name, load in PHOTOS.items():
        photo = load()
        top, left = (photo.shape[0] - 192) // 2, (photo.shape[1] - 256) // 2
        crops[name] = np.ascontiguousarray(photo[top : top + 192, left : left + 256])
    return crops


@pytest.fixture(scope="module")
def noisy(clean: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Additive white Gaussian noise, σ = 25 of 255, clipped to uint8: the classic denoising benchmark setting."""
    out = {}
    for seed, (name, image) in enumerate(clean.items()):
        noise = np.random.default_rng(seed).normal(0.0, 25.0, image.shape)
        out[name] = np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def blurred(clean: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Gaussian blur of σ = 1 px per channel: close to (not equal to) Richardson–Lucy's fixed PSF."""
    return {
        name: np.clip(np.rint(ndimage.gaussian_filter(image.astype(float), (1.0, 1.0, 0), mode="reflect")), 0, 255)
        .astype(np.uint8)
        for name, image in clean.items()
    }


@pytest.mark.parametrize(("task", "name"), ALL_BASELINES)
def test_every_baseline_returns_uint8_rgb_of_the_input_shape(
    task: str, name: str, noisy: dict[str, np.ndarray]
) -> None:
    # An odd, non-square crop catches transposed axes and padding that is not cropped off again.
    image = np.ascontiguousarray(noisy["coffee"][:97, :131])
    before = image.copy()
    out = run_baseline(task, name, image)
    assert out.dtype == np.uint8
    assert out.shape == (97, 131, 3)
    np.testing.assert_array_equal(image, before)  # the input is never modified in place


@pytest.mark.parametrize(("task", "name"), ALL_BASELINES)
def test_every_baseline_is_deterministic(task: str, name: str, noisy: dict[str, np.ndarray]) -> None:
    image = noisy["chelsea"]
    np.testing.assert_array_equal(run_baseline(task, name, image), run_baseline(task, name, image))


@pytest.mark.parametrize("task", sorted(BASELINES))
def test_identity_returns_the_degraded_input_as_a_copy(task: str, noisy: dict[str, np.ndarray]) -> None:
    image = noisy["astronaut"]
    out = run_baseline(task, "identity", image)
    np.testing.assert_array_equal(out, image)
    assert not np.shares_memory(out, image)


@pytest.mark.parametrize("name", ["nl_means", "wavelet", "tv"])
def test_denoisers_gain_more_than_2_db_on_every_noisy_photo(
    name: str, clean: dict[str, np.ndarray], noisy: dict[str, np.ndarray]
) -> None:
    for photo, image in noisy.items():
        before = psnr(clean[photo], image)
        after = psnr(clean[photo], run_baseline("denoise", name, image))
        assert after > before + 2.0, f"{name} on {photo}: {before:.2f} dB → {after:.2f} dB"


@pytest.mark.parametrize("name", ["nl_means", "wavelet", "tv"])
def test_denoisers_leave_a_clean_photo_nearly_untouched(name: str, clean: dict[str, np.ndarray]) -> None:
    # The strength follows the noise estimated from the image, so a clean photo must not be smoothed away.
    for photo, image in clean.items():
        assert psnr(image, run_baseline("denoise", name, image)) > 38.0, f"{name} on clean {photo}"


def test_richardson_lucy_gains_on_gaussian_blur(clean: dict[str, np.ndarray], blurred: dict[str, np.ndarray]) -> None:
    for photo, image in blurred.items():
        out = run_baseline("deblur", "richardson_lucy", image)
        before, after = psnr(clean[photo], image), psnr(clean[photo], out)
        assert after > before + 0.5, f"richardson_lucy on {photo}: {before:.2f} dB → {after:.2f} dB"


def test_unsharp_mask_sharpens_gaussian_blur(clean: dict[str, np.ndarray], blurred: dict[str, np.ndarray]) -> None:
    for photo, image in blurred.items():
        out = run_baseline("deblur", "unsharp_mask", image)
        assert not np.array_equal(out, image)
        gradient = [np.abs(np.diff(x.astype(float), axis=1)).mean() for x in (image, out)]
        assert gradient[1] > 1.1 * gradient[0], f"unsharp_mask on {photo}: mean gradient {gradient}"
        assert psnr(clean[photo], out) > psnr(clean[photo], image), f"unsharp_mask on {photo}"


@pytest.mark.parametrize("name", ["unsharp_mask", "richardson_lucy"])
def test_sharpening_overshoot_is_clipped_not_wrapped(name: str) -> None:
    # A white square on black makes sharpening overshoot past 255 and below 0; a plain astype(uint8) would
    # wrap those to dark and bright speckles inside and around the square.
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 16:48] = 255
    out = run_baseline("deblur", name, image)
    assert out[20:44, 20:44].min() >= 250
    assert out[:8].max() <= 5


def test_baseline_names_list_identity_first() -> None:
    assert baseline_names("deblur") == ("identity", "unsharp_mask", "richardson_lucy")
    assert baseline_names("denoise") == ("identity", "nl_means", "wavelet", "tv")


def test_check_baselines_keeps_the_order_and_accepts_a_single_name() -> None:
    assert check_baselines("denoise", ["tv", "identity"]) == ("tv", "identity")
    assert check_baselines("denoise", "wavelet") == ("wavelet",)
    assert check_baselines("deblur", []) == ()


def test_unknown_baseline_name_lists_the_valid_ones() -> None:
    with pytest.raises(ImrestoreError, match="unsharp_mask, richardson_lucy") as error:
        check_baselines("deblur", ["identity", "wiener"])
    assert "'wiener'" in str(error.value)
    with pytest.raises(ImrestoreError, match="nl_means, wavelet, tv"):
        run_baseline("denoise", "bm3d", np.zeros((32, 32, 3), np.uint8))


def test_a_baseline_of_the_other_task_is_unknown() -> None:
    with pytest.raises(ImrestoreError, match="'nl_means'"):
        check_baselines("deblur", ["nl_means"])


def test_unknown_task_lists_the_tasks() -> None:
    with pytest.raises(ImrestoreError, match="deblur, denoise.*'derain'"):
        baseline_names("derain")
    with pytest.raises(ImrestoreError, match="'derain'"):
        run_baseline("derain", "identity", np.zeros((32, 32, 3), np.uint8))


def test_repeated_baseline_names_are_refused() -> None:
    with pytest.raises(ImrestoreError, match="tv repeated"):
        check_baselines("denoise", ["tv", "wavelet", "tv"])


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (np.zeros((32, 32, 3), np.float32), "dtype uint8.*found float32"),
        (np.zeros((32, 32, 3), np.uint16), "dtype uint8.*found uint16"),
        (np.zeros((32, 32), np.uint8), r"H×W×3.*found \(32, 32\)"),
        (np.zeros((32, 32, 4), np.uint8), r"H×W×3.*found \(32, 32, 4\)"),
        (np.zeros((3, 32, 32), np.uint8), r"H×W×3.*found \(3, 32, 32\)"),
        (np.zeros((8, 32, 3), np.uint8), r"≥ 16 px.*found \(8, 32, 3\)"),
        ([[[0, 0, 0]]], "numpy uint8 H×W×3 RGB array, found list"),
    ],
)
def test_bad_images_are_refused_with_what_was_expected_and_found(image: object, expected: str) -> None:
    with pytest.raises(ImrestoreError, match=expected):
        run_baseline("denoise", "nl_means", image)  # type: ignore[arg-type]
