"""Patch caches: aligned input/target crops stored as memory-mappable uint8 arrays.

Training reads random crops from thousands of patches per second. Decoding a PNG pair per sample (BasicSR's
disk backend) costs tens of milliseconds; a slice of a memory-mapped array costs microseconds. And DVC
hashes a few large files much faster than tens of thousands of small ones.

On-disk format (one folder per dataset, e.g. build/patches/gopro/):
    <subset>_input.npy, <subset>_target.npy   uint8, shape (N, size, size, 3), C order, .npy format
    <subset>_index.csv                          one row per patch: patch, pair_id, input_path, target_path, x, y
    cache.json                                  format version, patch size, per-subset count, shape and sha256
                                                of every file, the parameters and the sha256 of the split table
`PatchCache` opens a subset and refuses a cache whose files do not match cache.json (wrong size or shape
always; wrong content with verify="full"), naming the file, what was expected and what was found.

`build_patch_cache` writes that format. Crops follow BasicSR's `extract_subimages` (a grid of `size` crops
every `step` pixels, plus a last row/column flush with the border when more than `thresh_size` pixels would
be left over). The plan comes from the widths and heights in the split table, so the arrays are allocated
at their final size before any image is decoded; worker processes then decode one pair at a time and write
its patches straight into the files at precomputed offsets. Memory stays at a few decoded images per worker
whatever the dataset's size, and the bytes do not depend on the number of workers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from imrestore.errors import ImrestoreError

CACHE_FORMAT = 1
META_FILE = "cache.json"
ROLES = ("input", "target")


def array_file(root: Path, subset: str, role: str) -> Path:
    return Path(root) / f"{subset}_{role}.npy"


def index_file(root: Path, subset: str) -> Path:
    return Path(root) / f"{subset}_index.csv"


def sha256_of(path: Path, chunk_bytes: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def read_meta(root: Path) -> dict:
    path = Path(root) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImrestoreError(f"no patch cache at {root}: {META_FILE} is missing (run `dvc repro` to build it)") from None
    except json.JSONDecodeError as exc:
        raise ImrestoreError(f"{path} is corrupt ({exc}); rebuild the cache with `dvc repro -f patches@…`") from None
    if meta.get("format") != CACHE_FORMAT:
        raise ImrestoreError(f"{path}: expected patch cache format {CACHE_FORMAT}, found {meta.get('format')!r}; rebuild it")
    return meta


class PatchCache:
    """One subset of a patch cache, memory-mapped read-only: `inputs[i]`, `targets[i]` are aligned patches."""

    def __init__(self, root: Path | str, subset: str = "train", verify: Literal["shape", "full"] = "shape") -> None:
        self.root = Path(root)
        self.subset = subset
        self.meta = read_meta(self.root)
        subsets = self.meta.get("subsets", {})
        if subset not in subsets:
            raise ImrestoreError(
                f"patch cache {self.root} has no subset {subset!r}; it has {', '.join(sorted(subsets)) or 'none'}")
        self.info = subsets[subset]
        self.patch_size = int(self.meta["size"])
        expected_shape = (int(self.info["count"]), self.patch_size, self.patch_size, 3)
        arrays = {}
        for role in ROLES:
            path = array_file(self.root, subset, role)
            arrays[role] = self._open_array(path, expected_shape)
            if verify == "full":
                self._check_hash(path, self.info[f"{role}_sha256"])
        self.inputs: np.ndarray = arrays["input"]
        self.targets: np.ndarray = arrays["target"]
        index_path = index_file(self.root, subset)
        if verify == "full":
            self._check_hash(index_path, self.info["index_sha256"])
        self.index = pd.read_csv(index_path)
        if len(self.index) != expected_shape[0]:
            raise ImrestoreError(
                f"{index_path}: expected {expected_shape[0]} rows (cache.json), found {len(self.index)}; the cache is "
                "stale or corrupt: rebuild it with `dvc repro -f patches@…`")

    def __len__(self) -> int:
        return int(self.info["count"])

    @staticmethod
    def _open_array(path: Path, expected_shape: tuple[int, ...]) -> np.ndarray:
        try:
            array = np.load(path, mmap_mode="r")
        except FileNotFoundError:
            raise ImrestoreError(f"patch cache file {path} is missing; rebuild with `dvc repro -f patches@…`") from None
        except ValueError as exc:  # truncated data or a damaged .npy header
            raise ImrestoreError(f"patch cache file {path} is corrupt ({exc}); rebuild with `dvc repro -f patches@…`") from None
        if array.dtype != np.uint8 or array.shape != expected_shape:
            raise ImrestoreError(
                f"patch cache file {path}: expected uint8 {expected_shape} (cache.json), found {array.dtype} {array.shape}; "
                "the cache is stale or corrupt: rebuild with `dvc repro -f patches@…`")
        return array

    @staticmethod
    def _check_hash(path: Path, expected: str) -> None:
        actual = sha256_of(path)
        if actual != expected:
            raise ImrestoreError(
                f"patch cache file {path}: expected sha256 {expected} (cache.json), found {actual}; "
                "the cache is corrupt: rebuild with `dvc repro -f patches@…`")
