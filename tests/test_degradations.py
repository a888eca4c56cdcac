"""The synthetic-degradation physics, checked on real photographs from scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from imrestore.acquire import degradations as deg
@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    return data.chelsea()[:192, 100:292]  # 192×192 uint8 RGB, fur and background


def band_limited(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """A photo as a sensor sees it: optics and the anti-aliasing filter remove detail finer than ~2 pixels."""
    return deg.to_uint8(ndimage.gaussian_filter(deg.to_float(image), (sigma, sigma, 0)))


def gradient_energy(image: np.ndarray) -> float:
    gray = deg.to_float(image).mean(axis=-1)
    return float(np.mean(np.diff(gray, axis=0) ** 2) + np.mean(np.diff(gray, axis=1) ** 2))


# ---------------------------------------------------------------------------------------------- tone curves


def test_srgb_linear_round_trip_and_reference_values():
    x = np.linspace(0.0, 1.0, 1001)
    np.testing.assert_allclose(deg.linear_to_srgb(deg.srgb_to_linear(x)), x, atol=1e-12)
    np.testing.assert_allclose(deg.srgb_to_linear(deg.linear_to_srgb(x)), x, atol=1e-12)
    # IEC 61966-2-1: the linear toe below 0.04045 and mid-grey 0.5 → 0.2140.
    assert deg.srgb_to_linear(0.04) == pytest.approx(0.04 / 12.92)
    assert deg.srgb_to_linear(0.5) == pytest.approx(0.21404, abs=1e-5)
    assert np.all(np.diff(deg.srgb_to_linear(x)) > 0)


def test_gamma_and_smoothstep_round_trips():
    x = np.linspace(0.0, 1.0, 1001)
    np.testing.assert_allclose(deg.linear_to_gamma(deg.gamma_to_linear(x[1:])), x[1:], atol=1e-12)
    np.testing.assert_allclose(deg.smoothstep(deg.inverse_smoothstep(x)), x, atol=1e-12)
    assert deg.gamma_to_linear(0.5) == pytest.approx(0.5**2.2)


# ---------------------------------------------------------------------------------------------- GoPro physics


def test_camera_trajectory_is_smooth_bounded_and_seeded():
    rng = np.random.default_rng(0)
    path = deg.camera_trajectory(rng, 300, speed_px=2.0, max_shift_px=20.0, max_rotation_deg=0.5)
    assert path.shape == (300, 3)
    assert np.all(np.abs(path[:, :2]) <= 20.0 + 1e-9)
    assert np.all(np.abs(path[:, 2]) <= math.radians(0.5) + 1e-12)
    velocity, acceleration = np.diff(path[:, :2], axis=0), np.diff(path[:, :2], n=2, axis=0)
    assert 0.3 < np.sqrt(np.mean(velocity**2)) < 4.0  # it moves, at about speed_px per sub-frame ...
    assert np.sqrt(np.mean(acceleration**2)) < 0.5 * np.sqrt(np.mean(velocity**2))  # ... smoothly
    again = deg.camera_trajectory(np.random.default_rng(0), 300, speed_px=2.0, max_shift_px=20.0, max_rotation_deg=0.5)
    np.testing.assert_array_equal(path, again)
    other = deg.camera_trajectory(np.random.default_rng(1), 300, speed_px=2.0, max_shift_px=20.0, max_rotation_deg=0.5)
    assert not np.array_equal(path, other)


def test_render_view_crops_and_rotates_exactly():
    photo = deg.to_float(data.astronaut()[:200, :200]).astype(np.float32)
    # Centre (49.5, 59.5) with a 40×40 view covers columns 30..69 and rows 40..79.
    view = deg.render_view(photo, 49.5, 59.5, 0.0, 40, 40)
    np.testing.assert_allclose(view, photo[40:80, 30:70], atol=1e-6)
    turned = deg.render_view(photo, 49.5, 59.5, math.pi / 2, 40, 40)
    np.testing.assert_allclose(turned, np.rot90(photo[40:80, 30:70]), atol=1e-5)


def test_required_photo_size_keeps_every_view_inside():
    out_w, out_h, shift, rotation = 64, 48, 10.0, 2.0
    width, height = deg.required_photo_size(out_w, out_h, shift, rotation)
    theta = math.radians(rotation)
    corners = np.array([[-(out_w - 1) / 2, -(out_h - 1) / 2], [(out_w - 1) / 2, -(out_h - 1) / 2]])
    for angle in (-theta, theta):
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        reach = np.abs(corners @ rot.T).max(axis=0) + shift
        centre = np.array([(width - 1) / 2, (height - 1) / 2])
        assert np.all(centre - reach >= 1) and np.all(centre + reach <= np.array([width, height]) - 2)


def test_blur_is_less_sharp_than_sharp_and_gamma_blur_differs():
    photo = deg.to_float(data.astronaut()).astype(np.float32)
    path = deg.camera_trajectory(np.random.default_rng(3), 11, speed_px=3.0, max_shift_px=40.0)
    subframes = [deg.to_uint8(deg.render_view(photo, 256 + dx, 256 + dy, dt, 160, 120)) for dx, dy, dt in path]
    sharp, blur, blur_gamma = deg.gopro_triplet(subframes)
    np.testing.assert_array_equal(sharp, subframes[5])
    assert blur.dtype == blur_gamma.dtype == np.uint8 and blur.shape == sharp.shape == (120, 160, 3)
    assert gradient_energy(blur) < 0.7 * gradient_energy(sharp)
    assert gradient_energy(blur_gamma) < 0.7 * gradient_energy(sharp)
    assert not np.array_equal(blur, blur_gamma)
    # Averaging light then compressing is a power mean: never darker than averaging the encoded values.
    assert np.all(blur_gamma.astype(int) >= blur.astype(int) - 1)
    assert blur_gamma.mean() > blur.mean()


def test_averaging_identical_frames_changes_nothing():
    frame = data.coffee()[:50, :60]
    sharp, blur, blur_gamma = deg.gopro_triplet([frame] * 7)
    np.testing.assert_array_equal(blur, frame)
    np.testing.assert_array_equal(blur_gamma, frame)


# ---------------------------------------------------------------------------------------------- SIDD physics


@pytest.mark.parametrize("camera", deg.CAMERAS)
@pytest.mark.parametrize("temperature", deg.ILLUMINANTS_K)
def test_unprocess_then_process_is_near_identity(cat, camera, temperature):
    photo = band_limited(cat)
    back = deg.to_uint8(deg.process(deg.unprocess(deg.to_float(photo), camera, temperature), camera, temperature))
    error = np.abs(back.astype(int) - photo.astype(int))
    assert error.mean() < 1.0
    assert np.percentile(error, 99) <= 8


def test_flat_grey_survives_the_raw_round_trip_exactly():
    grey = np.full((16, 16, 3), 118, dtype=np.uint8)
    for camera in deg.CAMERAS:
        back = deg.to_uint8(deg.process(deg.unprocess(deg.to_float(grey), camera, 3200), camera, 3200))
        assert np.abs(back.astype(int) - 118).max() <= 1


def test_malvar_demosaic_beats_bilinear(cat):
    linear = deg.srgb_to_linear(deg.to_float(cat))
    bayer = deg.mosaic_rggb(linear)
    np.testing.assert_array_equal(bayer[0::2, 0::2], linear[0::2, 0::2, 0])
    np.testing.assert_array_equal(bayer[1::2, 1::2], linear[1::2, 1::2, 2])
    malvar = np.abs(deg.demosaic_malvar(bayer) - linear).mean()
    bilinear = np.abs(deg.demosaic_bilinear(bayer) - linear).mean()
    assert malvar < 0.8 * bilinear


def test_noise_levels_follow_the_brooks_fit():
    for camera in deg.CAMERAS:
        shots = []
        for iso in deg.SIDD_ISOS:
            shot, read = deg.noise_levels(camera, iso)
            assert 1e-4 - 1e-12 <= shot <= 1.2e-2 + 1e-12
            assert math.log(read) == pytest.approx(2.18 * math.log(shot) + 1.20 + deg.READ_LOG_OFFSET[camera])
            shots.append(shot)
        assert shots == sorted(shots)


def test_poisson_gaussian_noise_has_the_modelled_mean_and_variance():
    shot, read = deg.noise_levels("GP", 1600)
    raw = np.full((400, 400), 0.3)
    noisy = deg.add_poisson_gaussian_noise(raw, shot, read, np.random.default_rng(0))
    assert noisy.mean() == pytest.approx(0.3, abs=1e-3)
    assert noisy.var() == pytest.approx(shot * 0.3 + read, rel=0.03)


def test_noise_grows_with_iso_and_with_less_light(cat):
    def noise_std(iso: int, brightness: str) -> float:
        gt, noisy = deg.sidd_pair(cat, "S6", iso, 4400, brightness, np.random.default_rng(0))
        return float((noisy.astype(float) - gt).std())

    by_iso = [noise_std(iso, "N") for iso in (100, 400, 1600, 6400)]
    assert by_iso == sorted(by_iso) and by_iso[-1] > 3 * by_iso[0]
    assert noise_std(800, "L") > noise_std(800, "N") > noise_std(800, "H")


def test_sidd_pair_differs_only_by_zero_mean_noise(cat):
    gt_a, noisy_a = deg.sidd_pair(cat, "IP", 800, 5500, "N", np.random.default_rng(1))
    gt_b, noisy_b = deg.sidd_pair(cat, "IP", 800, 5500, "N", np.random.default_rng(2))
    np.testing.assert_array_equal(gt_a, gt_b)  # the ground truth does not depend on the noise draw
    assert not np.array_equal(noisy_a, noisy_b)
    residual = noisy_a.astype(float) - gt_a
    assert abs(residual.mean()) < 1.0 and residual.std() > 3.0
    assert gt_a.dtype == noisy_a.dtype == np.uint8 and gt_a.shape == cat.shape


def test_sidd_pair_rejects_unknown_settings(cat):
    with pytest.raises(ValueError, match="camera"):
        deg.sidd_pair(cat, "XX", 100, 5500, "N", np.random.default_rng(0))
    with pytest.raises(ValueError, match="brightness"):
        deg.sidd_pair(cat, "GP", 100, 5500, "Q", np.random.default_rng(0))


def test_shutter_is_shorter_for_higher_iso_and_more_light():
    assert deg.shutter_denominator(100, "N") < deg.shutter_denominator(800, "N")
    assert deg.shutter_denominator(800, "L") < deg.shutter_denominator(800, "N") < deg.shutter_denominator(800, "H")
    assert all(1 <= deg.shutter_denominator(iso, b) <= 99999 for iso in deg.SIDD_ISOS for b in deg.BRIGHTNESS)
