"""Tiny datasets in the real upstream layouts, written as real PNG files, for tests."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

GOPRO_SEQUENCES = {"train": ["GOPR0372_07_00", "GOPR0374_11_00"], "test": ["GOPR0384_11_01"]}
SIDD_FOLDERS = ["0001_001_S6_00100_00060_3200_L", "0002_001_GP_00800_00350_5500_N", "0003_002_IP_01600_01000_4400_H"]


def natural_image(seed: int, width: int = 48, height: int = 32) -> np.ndarray:
    """A smooth, mid-grey textured RGB image: plausible statistics, distinct per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    base = 0.5 + 0.25 * np.sin(2 * np.pi * (x * rng.uniform(1, 3) + y * rng.uniform(1, 3)))
    image = base[..., None] + 0.15 * rng.standard_normal((height, width, 3))
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def degraded(image: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(-6, 7, image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


def save_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def save_png16_rgb(path: Path, width: int = 48, height: int = 32) -> Path:
    """A 16-bit RGB PNG, written by hand because Pillow cannot write 48-bit colour."""
    rows = b"".join(b"\x00" + np.full((width, 3), 30000, ">u2").tobytes() for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def write_gopro(raw: Path, frames: int = 2) -> Path:
    root = raw / "GOPRO_Large"
    seed = 0
    for split, sequences in GOPRO_SEQUENCES.items():
        for seq in sequences:
            for frame in range(frames):
                seed += 1
                name = f"{frame + 1:06d}.png"
                sharp = natural_image(seed)
                save_png(root / split / seq / "sharp" / name, sharp)
                save_png(root / split / seq / "blur" / name, degraded(sharp, seed))
                save_png(root / split / seq / "blur_gamma" / name, degraded(sharp, seed + 1000))
    return root


def write_sidd(raw: Path) -> Path:
    root = raw / "SIDD_Small_sRGB_Only"
    for seed, folder in enumerate(SIDD_FOLDERS, start=1):
        gt = natural_image(seed)
        save_png(root / "Data" / folder / "GT_SRGB_010.PNG", gt)
        save_png(root / "Data" / folder / "NOISY_SRGB_010.PNG", degraded(gt, seed))
    (root / "Scene_Instances.txt").write_text("\n".join(SIDD_FOLDERS) + "\n")
    return root


GOPRO_COUNTS = {"train": 4, "test": 2}  # write_gopro with frames=2
SIDD_COUNTS = {"all": len(SIDD_FOLDERS)}
