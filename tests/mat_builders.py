"""Small SIDD validation benchmark files in the published formats (MAT v5 and MAT v7.3), for tests.

The arrays have the real layout, (images, blocks, size, size, 3) uint8 RGB, with ground truth cut from real
photographs shipped with scikit-image and noisy = ground truth + seeded Gaussian noise.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import scipy.io
import skimage.data

NOISY_NAME, GT_NAME = "ValidationNoisyBlocksSrgb.mat", "ValidationGtBlocksSrgb.mat"
PHOTOS = (skimage.data.astronaut, skimage.data.coffee, skimage.data.chelsea)
NOISE_SIGMA = 10.0  # of 255: visible, and leaves the noisy blocks well correlated with the truth

# The 128-byte text header MATLAB writes into the HDF5 userblock of a -v7.3 file: 116 bytes of description,
# 8 bytes of subsystem offset, version 0x0200 and the endian indicator "IM". scipy reads the version from
# bytes 124–127 to recognise (and refuse) v7.3.
MAT73_HEADER = (
    b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    .ljust(116, b" ")
    + b"\x00" * 8
    + b"\x00\x02"
    + b"IM"
)


def sidd_blocks(images: int = 2, blocks: int = 3, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, gt) arrays of shape (images, blocks, size, size, 3), uint8; image i crops photo i mod 3."""
    rng = np.random.default_rng(seed)
    gt = np.empty((images, blocks, size, size, 3), np.uint8)
    for image in range(images):
        photo = PHOTOS[image % len(PHOTOS)]()
        for block in range(blocks):
            top = rng.integers(0, photo.shape[0] - size + 1)
            left = rng.integers(0, photo.shape[1] - size + 1)
            gt[image, block] = photo[top : top + size, left : left + size]
    noisy = np.clip(np.rint(gt + rng.normal(0.0, NOISE_SIGMA, gt.shape)), 0, 255).astype(np.uint8)
    return noisy, gt


def write_mat_v5(path: Path, key: str, array: np.ndarray) -> Path:
    """A MAT v5 file as MATLAB's default `save` (and the published SIDD files) write it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {key: array})
    return path


def write_mat_v73(path: Path, key: str, array: np.ndarray) -> Path:
    """A MAT v7.3 file: HDF5 behind a 512-byte userblock holding MATLAB's header, the array column-major."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as mat:
        # MATLAB writes the column-major buffer; to HDF5 (row-major) that is the array with its axes reversed.
        dataset = mat.create_dataset(key, data=np.ascontiguousarray(array.T), compression="gzip", chunks=True)
        dataset.attrs["MATLAB_class"] = np.bytes_(array.dtype.name)
    with open(path, "r+b") as raw:
        raw.write(MAT73_HEADER.ljust(512, b"\x00"))
    return path


def write_sidd_validation(
    folder: Path, images: int = 2, blocks: int = 3, size: int = 32, v73: bool = False, seed: int = 0
) -> tuple[Path, Path]:
    """Write both SIDD validation files into `folder`; returns (noisy_path, gt_path)."""
    noisy, gt = sidd_blocks(images, blocks, size, seed)
    write = write_mat_v73 if v73 else write_mat_v5
    noisy_path = write(Path(folder) / NOISY_NAME, Path(NOISY_NAME).stem, noisy)
    gt_path = write(Path(folder) / GT_NAME, Path(GT_NAME).stem, gt)
    return noisy_path, gt_path
