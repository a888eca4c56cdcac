"""Build the manifest: one row per input/target pair, with the facts later stages and validation need.

Every image is fully decoded (in parallel across cores) so that a truncated or corrupt file is caught here,
not hours into training. Problems are recorded in the row rather than raised, so validation can name every
offending file in one report.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from imrestore.data.layouts import Pair
from imrestore.errors import ImrestoreError
from imrestore.progress import progress_bar

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type → channels (3 = palette: one index per pixel, expanded to RGB by decoders).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
_PIL_CHANNELS = {"1": 1, "L": 1, "P": 3, "RGB": 3, "RGBA": 4, "LA": 2, "I": 1, "I;16": 1, "F": 1, "CMYK": 4}


@dataclass(frozen=True)
class ImageFacts:
    width: int = 0
    height: int = 0
    channels: int = 0
    bit_depth: int = 0
    sha256: str = ""
    error: str = ""


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def read_rgb8(path: Path) -> np.ndarray:
    """Decode an 8-bit RGB image fully (raises on truncation or corruption)."""
    with Image.open(path) as image:
        image.load()
        return np.asarray(image.convert("RGB"))


def load_rgb8(path: Path) -> np.ndarray:
    """`read_rgb8` for callers that need the image: greyscale is repeated, alpha dropped, and an unreadable
    file is an ImrestoreError that names it."""
    try:
        return read_rgb8(Path(path))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImrestoreError(f"{path}: not a readable image ({exc})") from None


def inspect_image(path: Path) -> tuple[ImageFacts, np.ndarray | None]:
    """Hash and fully decode one image; return its facts and, for 8-bit RGB, its pixels."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return ImageFacts(error=f"unreadable: {exc.strerror or exc}"), None
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as image:  # the bytes already read: one read per file
            image.load()  # decodes every byte: truncation raises here
            width, height, mode = image.width, image.height, image.mode
            pixels = np.asarray(image) if mode == "RGB" else None
    except UnidentifiedImageError:
        # Pillow's message names the stream it was given (`<_io.BytesIO object at 0x…>`): name the file, and
        # show how it starts, which tells an HTML error page or an empty download from an image.
        return ImageFacts(sha256=digest, error=f"cannot decode: {path.as_posix()} is in no image format Pillow "
                                                f"identifies (it starts with {data[:16]!r})"), None
    except (OSError, SyntaxError, ValueError) as exc:
        return ImageFacts(sha256=digest, error=f"cannot decode: {exc}"), None
    channels, bit_depth = _png_header(data) or (_PIL_CHANNELS.get(mode, 0), 16 if mode.startswith("I;16") else 8)
    if bit_depth != 8:
        pixels = None  # Pillow reduces 16-bit RGB to 8 bits silently; such files fail the schema instead
    return ImageFacts(width, height, channels, bit_depth, digest), pixels


def _png_header(data: bytes) -> tuple[int, int] | None:
    """(channels, bit depth) from the PNG IHDR chunk: Pillow's mode hides 16-bit RGB."""
    if not data.startswith(_PNG_SIGNATURE) or len(data) < 26:
        return None
    bit_depth, colour_type = struct.unpack(">BB", data[24:26])
    return _PNG_CHANNELS.get(colour_type, 0), bit_depth


def inspect_pair(pair: Pair) -> dict[str, object]:
    """One manifest row: facts of both images plus statistics validation checks."""
    row: dict[str, object] = {"pair_id": pair.pair_id, "split": pair.split, "group": pair.group, **pair.meta}
    pixels = {}
    for role, path in (("input", pair.input), ("target", pair.target)):
        row[f"{role}_path"] = path.as_posix() if path else None
        facts, pixels[role] = inspect_image(path) if path else (ImageFacts(error="missing partner"), None)
        row.update({f"{role}_{k}": v for k, v in facts.__dict__.items()})
    row.update(_pair_statistics(pixels["input"], pixels["target"]))
    return row


def _pair_statistics(inp: np.ndarray | None, tgt: np.ndarray | None) -> dict[str, float]:
    # Integer sums on the uint8 pixels: widening a 720p frame to float costs more than decoding a third of it.
    stats = {"input_mean": np.nan, "target_mean": np.nan, "input_target_mae": np.nan}
    if inp is not None:
        stats["input_mean"] = int(inp.sum(dtype=np.uint64)) / inp.size
    if tgt is not None:
        stats["target_mean"] = int(tgt.sum(dtype=np.uint64)) / tgt.size
    if inp is not None and tgt is not None and inp.shape == tgt.shape:
        abs_diff = np.maximum(inp, tgt) - np.minimum(inp, tgt)  # |a - b| without leaving uint8
        stats["input_target_mae"] = int(abs_diff.sum(dtype=np.uint64)) / inp.size
    return stats


def build_manifest(pairs: list[Pair], dataset: str, workers: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Inspect every pair (in `workers` processes) and return the manifest, in the order of `pairs`."""
    workers = workers or default_workers()
    rows = []
    with progress_bar(f"validate {dataset}", total=len(pairs), unit="pairs", enabled=progress) as advance:
        if workers == 1:
            for pair in pairs:
                rows.append(inspect_pair(pair))
                advance(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for row in pool.map(inspect_pair, pairs, chunksize=4):
                    rows.append(row)
                    advance(1)
    frame = pd.DataFrame(rows)
    frame.insert(0, "dataset", dataset)
    return frame


# Identifiers that look numeric but are names: "000047" must not become 47.
_TEXT_COLUMNS = {"pair_id": str, "split": str, "group": str, "sequence": str, "frame": str, "scene_instance": str,
                 "capture": str, "input_path": str, "target_path": str, "input_error": str, "target_error": str}


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest (or a table derived from one) written by `build_manifest` with its types intact."""
    try:
        return pd.read_csv(path, dtype=_TEXT_COLUMNS, keep_default_na=False)
    except FileNotFoundError:
        raise ImrestoreError(f"{path} not found: run `dvc repro` so the validate stage writes it") from None
