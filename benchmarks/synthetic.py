"""The data benchmarks' images: 1280×720 PNG pairs made from scikit-image's bundled photos, written once per folder.

A scene is a bundled colour photo (read from the installed package, no network), mildly sheared and rotated,
scaled to more than a frame so a camera can pan across it, and relit by a soft gradient. Two layouts:

- `gopro_pairs`: GoPro's (GOPRO_Large/{train,test}/<SEQ>/{blur,blur_gamma,sharp}/NNNNNN.png), for
  validation_throughput.py and patch_cache_build.py. Each sequence pans slowly across one scene; `sharp` is
  a crop with a touch of sensor noise, `blur` the average of 7 crops along a short camera shake (as GoPro's
  blur averages frames), `blur_gamma` hard links to `blur` (only the layout check wants the folder).
- `noisy_pairs`: NNNN_{input,target}.png denoising pairs, one scene each, for loader_throughput.py: the
  target gets a touch of sensor noise, the input more.

What each benchmark measures (decoding, cropping, hashing these files) does not depend on the exact pixels,
only on their being photo-like PNGs of this size.
"""

from __future__ import annotations

import importlib.resources
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console

WIDTH, HEIGHT = 1280, 720
MARGIN = (320, 240)  # how much larger than a frame a scene is, so the camera can pan
PAN = (300, 220)  # how far a sequence pans: within the margin, with room for the shake
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "motorcycle_left.png", "hubble_deep_field.jpg",
          "rocket.jpg", "ihc.png", "retina.jpg", "motorcycle_right.png")
FRAMES_PER_SEQUENCE = 20
DEFAULT_GOPRO_PAIRS = 200


def scene(index: int) -> np.ndarray:
    """Scene `index`: a bundled photo, warped, scaled beyond a frame and relit, as float32 RGB in [0, 255]."""
    resource = importlib.resources.files("skimage.data") / PHOTOS[index % len(PHOTOS)]
    with importlib.resources.as_file(resource) as path, Image.open(path) as image:
        photo = image.convert("RGB")
    rng = np.random.default_rng(index)
    w, h = photo.size
    shear, angle = rng.uniform(-0.08, 0.08), rng.uniform(-6, 6)
    photo = photo.transform((w, h), Image.Transform.AFFINE, (1, shear, -shear * h / 2, 0, 1, 0),
                            resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))
    photo = photo.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
    margin = int(0.12 * min(w, h))  # crop the black borders the warp left
    photo = photo.crop((margin, margin, w - margin, h - margin))
    canvas = np.asarray(photo.resize((WIDTH + MARGIN[0], HEIGHT + MARGIN[1]), Image.Resampling.BICUBIC),
                        dtype=np.float32)
    y, x = np.mgrid[0 : canvas.shape[0], 0 : canvas.shape[1]].astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    light = 0.85 + 0.3 * ((np.cos(direction) * x + np.sin(direction) * y) / max(canvas.shape[:2]))
    return canvas * light[..., None]


def _camera(index: int, frames: int) -> tuple[np.ndarray, np.random.Generator, list[tuple[float, float]]]:
    """(scene, the sequence's generator, the top-left corner of each of `frames` frames of a slow pan)."""
    rng = np.random.default_rng(1000 + index)
    step = rng.uniform(-1, 1, 2) * np.array(PAN) / max(frames, 1)
    first = np.array(MARGIN) / 2 - step * frames / 2
    return scene(index), rng, [tuple(first + step * frame) for frame in range(frames)]


def _crop(canvas: np.ndarray, x: float, y: float) -> np.ndarray:
    x, y = round(x), round(y)
    return canvas[y : y + HEIGHT, x : x + WIDTH]


def _noisy(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    return np.clip(image + rng.normal(0, sigma, image.shape).astype(np.float32), 0, 255).astype(np.uint8)


def _save(path: Path, pixels: np.ndarray) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path.stat().st_size


def _write_sequence(job: tuple[Path, int, int]) -> int:
    """Write the sharp/blur/blur_gamma frames of one GoPro-like sequence; return the PNG bytes written."""
    folder, index, frames = job
    canvas, rng, corners = _camera(index, frames)
    written = 0
    for frame, (x, y) in enumerate(corners, start=1):
        shake = rng.uniform(-6, 6, 2)  # camera shake during the exposure
        blur = np.mean([_crop(canvas, x + t * shake[0], y + t * shake[1]) for t in np.linspace(-1, 1, 7)], axis=0)
        name = f"{frame:06d}.png"
        written += _save(folder / "sharp" / name, _noisy(_crop(canvas, x, y), rng, 2.0))
        written += _save(folder / "blur" / name, _noisy(blur, rng, 1.5))
        gamma = folder / "blur_gamma" / name
        gamma.parent.mkdir(exist_ok=True)
        gamma.unlink(missing_ok=True)
        os.link(folder / "blur" / name, gamma)
    return written


def _write_noisy_pair(job: tuple[Path, int]) -> int:
    """Write one denoising pair (input: noise sigma 5-15, target: sigma 1); return the PNG bytes written."""
    folder, index = job
    canvas, rng, [(x, y)] = _camera(index, 1)
    clean = _crop(canvas, x, y)
    return (_save(folder / f"{index:04d}_input.png", _noisy(clean, rng, rng.uniform(5, 15)))
            + _save(folder / f"{index:04d}_target.png", _noisy(clean, rng, 1.0)))


def _write(function: Callable[[tuple], int], jobs: list[tuple], pairs: int, where: str, workers: int,
           console: Console) -> None:
    console.print(f"writing {pairs} pairs of {WIDTH}x{HEIGHT} PNGs {where} ...")
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        size = sum(pool.map(function, jobs))
    console.print(f"  {size / 2 / pairs / 1e6:.2f} MB per PNG, {time.perf_counter() - start:.0f} s")


def gopro_pairs(raw: Path, pairs: int | None, workers: int, console: Console) -> list:
    """The pairs (imrestore.data.layouts.Pair) of raw/GOPRO_Large: reused when it exists (its first `pairs`,
    default all), else written with `pairs` pairs (default 200) in sequences of 20 frames, a fifth of the
    sequences (at least one) in test."""
    from imrestore.data.layouts import list_pairs

    root = raw / "GOPRO_Large"
    if root.is_dir():
        found = list_pairs(root, "gopro")
        if pairs and pairs > len(found):
            raise SystemExit(f"{root} holds {len(found)} pairs, fewer than the {pairs} needed: use another --data")
        console.print(f"reusing {root}: {pairs or len(found)} of its {len(found)} pairs")
        return found[:pairs] if pairs else found
    pairs = pairs or DEFAULT_GOPRO_PAIRS
    sequences = max(2, -(-pairs // FRAMES_PER_SEQUENCE))
    test = max(1, sequences // 5)
    jobs = [(root / ("test" if i >= sequences - test else "train") / f"GOPR{372 + i:04d}_{7 + i % 5:02d}_{i % 2:02d}",
             i, pairs // sequences + (i < pairs % sequences)) for i in range(sequences)]
    _write(_write_sequence, jobs, pairs, f"in {sequences} sequences to {root}", workers, console)
    return list_pairs(root, "gopro")


def noisy_pairs(root: Path, count: int, workers: int, console: Console) -> list[tuple[Path, Path]]:
    """`count` (input, target) denoising pairs under root/pairs, the missing ones written."""
    folder = root / "pairs"
    wanted = [(folder / f"{i:04d}_input.png", folder / f"{i:04d}_target.png") for i in range(count)]
    missing = [i for i, pair in enumerate(wanted) if not all(path.exists() for path in pair)]
    if missing:
        _write(_write_noisy_pair, [(folder, i) for i in missing], len(missing), f"to {folder}", workers, console)
    return wanted
