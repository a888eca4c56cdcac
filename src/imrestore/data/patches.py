"""Patch caches: aligned input/target crops stored as memory-mappable uint8 arrays.

Training reads random crops from thousands of patches per second. Decoding a PNG pair per sample (BasicSR's
disk backend) costs tens of milliseconds; a slice of a memory-mapped array costs microseconds. And DVC
hashes a few large files much faster than tens of thousands of small ones.

On-disk format (one folder per dataset, e.g. build/patches/gopro/):
    <subset>_input.npy, <subset>_target.npy   uint8, shape (N, size, size, 3), C order, .npy format
    <subset>_index.csv                          one row per patch: patch, pair_id, input_path, target_path, x, y
    cache.json                                  format version, patch size, per-subset count, shape and sha256
                                                of every file, the parameters and the sha256 of the split table:
        {"format": 1, "size": 256, "step": 128, "thresh_size": 0, "params": {...}, "split_sha256": "…",
         "subsets": {"train": {"count": N, "pairs": P, "shape": [N, 256, 256, 3],
                               "input_sha256": "…", "target_sha256": "…", "index_sha256": "…"}}}
    Patch i of a subset is input/target[y:y+size, x:x+size] of row i of its index; a pair's patches are
    consecutive, pairs in split-table order, row-major within a pair.
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
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from imrestore import atomic
from imrestore.atomic import sha256_file
from imrestore.data.manifest import default_workers, read_rgb8
from imrestore.errors import ImrestoreError
from imrestore.params import Section, integer, required
from imrestore.progress import progress_bar

CACHE_FORMAT = 1
META_FILE = "cache.json"
ROLES = ("input", "target")
CHANNELS = 3
PLAN_COLUMNS = ("pair_id", "input_path", "target_path", "x", "y")
INDEX_COLUMNS = ("patch", *PLAN_COLUMNS)
SPLIT_COLUMNS = ("pair_id", "input_path", "target_path", "input_width", "input_height", "subset")
REBUILD = "rebuild with `dvc repro -f patches@…`"


def array_file(root: Path, subset: str, role: str) -> Path:
    return Path(root) / f"{subset}_{role}.npy"


def index_file(root: Path, subset: str) -> Path:
    return Path(root) / f"{subset}_index.csv"


def read_meta(root: Path) -> dict:
    path = Path(root) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImrestoreError(f"no patch cache at {root}: {META_FILE} is missing (run `dvc repro` to build it)") from None
    except json.JSONDecodeError as exc:
        raise ImrestoreError(f"{path} is corrupt ({exc}); {REBUILD}") from None
    if meta.get("format") != CACHE_FORMAT:
        raise ImrestoreError(f"{path}: expected patch cache format {CACHE_FORMAT}, found {meta.get('format')!r}; rebuild it")
    return meta


class PatchCache:
    """One subset of a patch cache, memory-mapped read-only: `inputs[i]`, `targets[i]` are aligned patches."""

    def __init__(self, root: Path | str, subset: str = "train", verify: Literal["shape", "full"] = "shape") -> None:
        if verify not in ("shape", "full"):
            raise ImrestoreError(f"PatchCache verify must be 'shape' or 'full', found {verify!r}")
        self.root = Path(root)
        self.subset = subset
        self.meta = read_meta(self.root)
        subsets = self.meta.get("subsets", {})
        if subset not in subsets:
            raise ImrestoreError(
                f"patch cache {self.root} has no subset {subset!r}; it has {', '.join(sorted(subsets)) or 'none'}")
        self.info = subsets[subset]
        self.patch_size = int(self.meta["size"])
        expected_shape = (int(self.info["count"]), self.patch_size, self.patch_size, CHANNELS)
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
        try:
            self.index = pd.read_csv(index_path)
        except FileNotFoundError:
            raise ImrestoreError(f"patch cache file {index_path} is missing; {REBUILD}") from None
        if tuple(self.index.columns) != INDEX_COLUMNS:
            raise ImrestoreError(f"{index_path}: expected columns {', '.join(INDEX_COLUMNS)}, found "
                                 f"{', '.join(map(str, self.index.columns))}; the cache is stale or corrupt: {REBUILD}")
        if len(self.index) != expected_shape[0]:
            raise ImrestoreError(
                f"{index_path}: expected {expected_shape[0]} rows (cache.json), found {len(self.index)}; the cache is "
                f"stale or corrupt: {REBUILD}")

    def __len__(self) -> int:
        return int(self.info["count"])

    @staticmethod
    def _open_array(path: Path, expected_shape: tuple[int, ...]) -> np.ndarray:
        try:
            array = np.load(path, mmap_mode="r")
        except FileNotFoundError:
            raise ImrestoreError(f"patch cache file {path} is missing; {REBUILD}") from None
        except ValueError as exc:  # truncated data or a damaged .npy header
            raise ImrestoreError(f"patch cache file {path} is corrupt ({exc}); {REBUILD}") from None
        if array.dtype != np.uint8 or array.shape != expected_shape:
            raise ImrestoreError(
                f"patch cache file {path}: expected uint8 {expected_shape} (cache.json), found {array.dtype} "
                f"{array.shape}; the cache is stale or corrupt: {REBUILD}")
        return array

    @staticmethod
    def _check_hash(path: Path, expected: str) -> None:
        try:
            actual = sha256_file(path)
        except FileNotFoundError:
            raise ImrestoreError(f"patch cache file {path} is missing; {REBUILD}") from None
        if actual != expected:
            raise ImrestoreError(
                f"patch cache file {path}: expected sha256 {expected} (cache.json), found {actual}; "
                f"the cache is corrupt: {REBUILD}")


# --------------------------------------------------------------------------------------------- building


@dataclass(frozen=True)
class PatchGeometry(Section):
    """The `patches.<dataset>` section: how the train (and val) images are cut into crops.

    The side is `crop_size` (BasicSR's name), never `size`: DVC's run-cache drops every param of that name from
    its key, so a changed `size` would be served an old cache without a word."""

    SECTION = "patches"

    crop_size: int = required(integer(minimum=1))
    step: int = required(integer(minimum=1))
    thresh_size: int = required(integer(minimum=0))

    @classmethod
    def for_dataset(cls, dataset: str, section: Any) -> PatchGeometry:
        return cls.from_params(section, f"patches.{dataset}")

    def keywords(self) -> dict[str, int]:
        """As `build_patch_cache`'s keywords: {size, step, thresh_size}."""
        return {"size": self.crop_size, "step": self.step, "thresh_size": self.thresh_size}


def check_geometry_matches(meta: dict[str, Any], geometry: PatchGeometry, cache_dir: Path, where: str) -> None:
    """Refuse a cache cut with other geometry than params.yaml asks for (it was built by another config)."""
    wanted = geometry.keywords()
    found = {key: meta.get(key) for key in wanted}
    if found != wanted:
        names = {"size": "crop_size", "step": "step", "thresh_size": "thresh_size"}
        differ = ", ".join(f"{names[k]} {found[k]} (params.yaml: {wanted[k]})" for k in wanted if found[k] != wanted[k])
        raise ImrestoreError(
            f"{cache_dir}/cache.json records patches cut with {differ}: the cache is not what {where} asks for. "
            f"Run `dvc repro patches@{where.split('.')[-1]}` to rebuild it"
        )


def crop_positions(length: int, size: int, step: int, thresh_size: int) -> list[int]:
    """Where crops of `size` pixels start along an axis of `length` pixels (BasicSR's `extract_subimages`):
    every `step` pixels, plus one crop flush with the far edge when the grid leaves more than `thresh_size`
    pixels uncovered there."""
    _check_geometry(size, step, thresh_size)
    if size > length:
        raise ImrestoreError(f"patch size {size} is larger than the image side of {length} pixels")
    positions = list(range(0, length - size + 1, step))
    if (length - size) - positions[-1] > thresh_size:
        positions.append(length - size)
    return positions


def plan_patches(table: pd.DataFrame, size: int, step: int, thresh_size: int) -> pd.DataFrame:
    """One row per patch (pair_id, input_path, target_path, x, y), pair by pair in table order and row-major
    within a pair, from the table's input_width/input_height alone: nothing is decoded."""
    return _plan(table, size, step, thresh_size)[0]


def _plan(table: pd.DataFrame, size: int, step: int, thresh_size: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The plan and the number of patches of each table row (a pair's patches are consecutive)."""
    _check_geometry(size, step, thresh_size)
    _require_columns(table, ("pair_id", "input_path", "target_path", "input_width", "input_height"), "split table")
    widths, heights = _sizes(table, "input_width"), _sizes(table, "input_height")
    grids: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}  # (w, h) → (xs, ys); datasets share a few sizes
    xs, ys, counts = [], [], np.zeros(len(table), dtype=np.int64)
    for row, (width, height, path) in enumerate(zip(widths, heights, table["input_path"])):
        if (width, height) not in grids:
            if size > width or size > height:
                param = f"patches.{table['dataset'].iloc[0]}.crop_size" if "dataset" in table else "the patch size"
                raise ImrestoreError(
                    f"{path}: the patch size {size}x{size} does not fit the image, which is {width}x{height} "
                    f"(width x height); expected images at least as large as the patch: lower {param}")
            grid_y, grid_x = np.meshgrid(crop_positions(height, size, step, thresh_size),
                                         crop_positions(width, size, step, thresh_size), indexing="ij")
            grids[width, height] = grid_x.ravel(), grid_y.ravel()
        grid_x, grid_y = grids[width, height]
        xs.append(grid_x)
        ys.append(grid_y)
        counts[row] = len(grid_x)
    rows = np.repeat(np.arange(len(table)), counts)
    plan = pd.DataFrame({column: table[column].to_numpy()[rows] for column in PLAN_COLUMNS[:3]})
    plan["x"] = np.concatenate(xs).astype(np.int64) if xs else np.zeros(0, np.int64)
    plan["y"] = np.concatenate(ys).astype(np.int64) if ys else np.zeros(0, np.int64)
    return plan, counts


def build_patch_cache(split_table: pd.DataFrame, out_dir: Path | str, *, size: int, step: int, thresh_size: int = 0,
                      subsets: Sequence[str] = ("train",), params: dict | None = None,
                      split_sha256: str | None = None, workers: int | None = None, progress: bool = True,
                      phase_seconds: dict[str, float] | None = None) -> dict:
    """Crop every pair of `subsets` into the patch cache at `out_dir` (the format at the top of this module)
    and return its cache.json. `out_dir` is replaced atomically: a failure leaves the previous cache, or none.
    `phase_seconds`, when given, receives the wall seconds of decoding + cropping + writing (`crop_s`) and of
    hashing + fsync (`hash_fsync_s`); cache.json holds no timings, so a rebuild stays byte-identical."""
    _check_geometry(size, step, thresh_size)
    _require_columns(split_table, SPLIT_COLUMNS, "split table")
    subsets = [subsets] if isinstance(subsets, str) else list(dict.fromkeys(subsets))
    if not subsets:
        raise ImrestoreError("patch cache subsets: expected at least one of train, val, test, found none")
    out_dir = Path(out_dir)
    header = {"format": CACHE_FORMAT, "size": size, "step": step, "thresh_size": thresh_size,
              "params": params or {}, "split_sha256": split_sha256}
    try:
        json.dumps(header)
    except (TypeError, ValueError) as exc:
        raise ImrestoreError(f"patch cache params must be JSON values, found {params!r} ({exc})") from None

    plans = {}
    available = split_table["subset"].value_counts().to_dict()
    for subset in subsets:
        rows = split_table[split_table["subset"] == subset].reset_index(drop=True)
        if rows.empty:
            found = ", ".join(f"{name}: {count}" for name, count in sorted(available.items())) or "no rows at all"
            raise ImrestoreError(f"subset {subset!r} of the split table has no pairs; expected at least one "
                                 f"(found {found})")
        plans[subset] = (rows, *_plan(rows, size, step, thresh_size))
    pairs = sum(len(rows) for rows, _, _ in plans.values())
    patch_bytes = size * size * CHANNELS
    workers = max(1, min(workers or default_workers(), pairs))

    with atomic.atomic_dir(out_dir) as tmp:
        _check_free_space(tmp, out_dir, 2 * patch_bytes * sum(len(plan) for _, plan, _ in plans.values()))
        subsets_meta, jobs, files = {}, [], []
        for subset, (rows, plan, counts) in plans.items():
            shape = (len(plan), size, size, CHANNELS)
            arrays = {}
            for role in ROLES:
                path = array_file(tmp, subset, role)
                # Sparse until written; only the header is touched here. Its offset is where patch 0 starts.
                array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
                arrays[role] = (str(path), int(array.offset))
                del array
                files.append(path)
            index = plan.copy()
            index.insert(0, "patch", np.arange(len(plan), dtype=np.int64))
            index.to_csv(index_file(tmp, subset), index=False, lineterminator="\n")
            files.append(index_file(tmp, subset))
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            widths, heights = _sizes(rows, "input_width"), _sizes(rows, "input_height")
            xs, ys = plan["x"].to_numpy(), plan["y"].to_numpy()
            for row, (start, count) in enumerate(zip(starts.tolist(), counts.tolist())):
                jobs.append(_PairJob(str(rows["input_path"].iat[row]), str(rows["target_path"].iat[row]),
                                     widths[row], heights[row], size, start,
                                     xs[start:start + count].copy(), ys[start:start + count].copy(), arrays))
            subsets_meta[subset] = {"count": len(plan), "pairs": len(rows), "shape": list(shape)}

        started = time.perf_counter()
        _run_jobs(jobs, workers, f"patches {out_dir.name}", progress)
        cropped = time.perf_counter()
        digests = _sync_and_hash(files, workers, progress)
        if phase_seconds is not None:  # the two halves of a build, for benchmarks/patch_cache_build.py
            phase_seconds.update(crop_s=cropped - started, hash_fsync_s=time.perf_counter() - cropped)
        for subset, info in subsets_meta.items():
            info["input_sha256"] = digests[array_file(tmp, subset, "input")]
            info["target_sha256"] = digests[array_file(tmp, subset, "target")]
            info["index_sha256"] = digests[index_file(tmp, subset)]
        meta = {**header, "subsets": subsets_meta}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


@dataclass(frozen=True)
class _PairJob:
    """What one worker needs for one pair: where to read, which crops, and where in the files they go."""

    input_path: str
    target_path: str
    width: int
    height: int
    size: int
    start: int  # index of the pair's first patch
    xs: np.ndarray
    ys: np.ndarray
    arrays: dict[str, tuple[str, int]]  # role → (.npy path, byte offset of patch 0)


def _write_pair(job: _PairJob) -> int:
    """Decode one pair and write its patches into the (preallocated) arrays; return the number of patches."""
    inp, tgt = _decode(job.input_path), _decode(job.target_path)
    if inp.shape != tgt.shape:
        raise ImrestoreError(
            f"{job.input_path} and {job.target_path} are a pair but differ in size: expected equal sizes, found input "
            f"{inp.shape[1]}x{inp.shape[0]} and target {tgt.shape[1]}x{tgt.shape[0]} (width x height)")
    if inp.shape[:2] != (job.height, job.width):
        raise ImrestoreError(
            f"{job.input_path}: the split table says {job.width}x{job.height}, the file decodes to "
            f"{inp.shape[1]}x{inp.shape[0]}; the split table is stale: re-run validate and split (`dvc repro`)")
    size, count = job.size, len(job.xs)
    for role, image in (("input", inp), ("target", tgt)):
        path, offset = job.arrays[role]
        # Map only this pair's slice, and unmap it before the next pair: written pages then belong to the page
        # cache, not to this process, so the worker's memory does not grow with the cache.
        region = np.memmap(path, dtype=np.uint8, mode="r+", shape=(count, size, size, CHANNELS),
                           offset=offset + job.start * size * size * CHANNELS)
        for k, (x, y) in enumerate(zip(job.xs.tolist(), job.ys.tolist())):
            region[k] = image[y:y + size, x:x + size]
        del region
    return count


def _decode(path: str) -> np.ndarray:
    try:
        image = read_rgb8(Path(path))
    except FileNotFoundError:
        raise ImrestoreError(f"{path}: file not found; expected the image the split table lists") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImrestoreError(f"{path}: cannot decode ({exc}); expected a readable 8-bit RGB image") from None
    return image


def _run_jobs(jobs: list[_PairJob], workers: int, label: str, progress: bool) -> None:
    if workers == 1:
        with progress_bar(label, total=len(jobs), unit="pairs", enabled=progress) as advance:
            for job in jobs:
                _write_pair(job)
                advance(1)
        return
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        # Submit everything first: the workers fork then, before the progress bar starts its thread. The jobs are
        # a few hundred bytes each; pixels never cross a pipe.
        futures = [pool.submit(_write_pair, job) for job in jobs]
        with progress_bar(label, total=len(jobs), unit="pairs", enabled=progress) as advance:
            for future in futures:  # in order, so the error reported is the first pair's, whatever the timing
                future.result()
                advance(1)
    except BrokenProcessPool:
        raise ImrestoreError(
            f"a patch worker process died while writing {label.split(' ', 1)[1]} (killed for memory, or the disk "
            "filled up under the cache?); expected every worker to finish. Try fewer workers or free disk space"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _sync_and_hash(files: list[Path], workers: int, progress: bool) -> dict[Path, str]:
    """sha256 of every file, streamed, and fsync each before the folder is renamed into place."""
    total = sum(path.stat().st_size for path in files)
    with progress_bar("hash patch cache", total=total, unit="bytes", enabled=progress) as advance:
        def one(path: Path) -> str:
            digest = hashlib.sha256()
            with open(path, "rb") as stream:
                while block := stream.read(8 << 20):
                    digest.update(block)  # hashlib releases the GIL on large blocks: files hash in parallel
                    advance(len(block))
                os.fsync(stream.fileno())
            return digest.hexdigest()

        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(files)))) as pool:
            return dict(zip(files, pool.map(one, files)))


def _check_geometry(size: int, step: int, thresh_size: int) -> None:
    for name, value, least in (("size", size, 1), ("step", step, 1), ("thresh_size", thresh_size, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ImrestoreError(f"patch {name} must be an integer >= {least}, found {value!r}")


def _require_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise ImrestoreError(f"{what}: expected columns {', '.join(columns)}; missing {', '.join(missing)}")


def _sizes(table: pd.DataFrame, column: str) -> list[int]:
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() | (values <= 0) | (values % 1 != 0)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ImrestoreError(f"{table['input_path'].iat[row]}: {column} in the split table must be a positive "
                             f"integer, found {table[column].iat[row]!r}")
    return values.astype(np.int64).tolist()


def _check_free_space(tmp: Path, out_dir: Path, needed: int) -> None:
    # The arrays are sparse until written, and a write into a memory map on a full disk kills the worker
    # (SIGBUS) instead of raising, so check up front.
    free = shutil.disk_usage(tmp).free
    if free < needed:
        raise ImrestoreError(f"{out_dir}: the patch cache needs {needed / 1e9:.2f} GB, found {free / 1e9:.2f} GB free "
                             f"on {out_dir.parent}; free disk space or lower the number of patches (larger step)")
