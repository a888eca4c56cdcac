"""Training-loader throughput (crops/s) of `imrestore.data.datamodule`, against per-sample PNG decoding in the same run.

Goal: ours (CPU path: `RestorationDataModule`'s DataLoader over the patch cache) >= 20 x the reference.

The reference is how BasicSR's disk backend feeds a restoration model: per sample, pick a pair, decode both
PNGs (PIL here, cv2 there), cut an aligned random crop, flip/rotate it, and make float CHW tensors. Both
loaders are torch DataLoaders with the same number of worker processes, the same batch size and crop size,
and produce the same kind of batch (float32 NCHW in [0, 1], input and target). They are measured in alternating
windows of at least --seconds each; each window starts a fresh loader, discards its first batches (worker
start-up, the prefetch queue filling) and shuts its workers down at the end, so no loader's workers run during
another's window. The table shows the best and median window in crops/s, and CPU ms per crop (this
process and its workers), which other load on the machine hardly changes: the CPU ratio is the wall ratio
ours would reach with its cores to itself.

The device-resident executor (the whole train cache on the device, crops gathered there) is measured on
--device for batch sizes --device-batches. With the default `--device cpu` it runs in this process on the CPU:
that checks the code path and gives a number labelled as such, not a training setup. On a GPU machine,
`--device cuda` measures the GPU-resident path at 128^2 and 256^2 for batch 8-64.

Data: --pairs (default 100) pairs of 1280x720 PNGs, written to a temp dir (or --data DIR, kept and reused):
mirrored tilings of scikit-image's bundled photos, warped (rotation, scale, shift) to fill a frame; the
target gets a touch of sensor noise, the input more (a denoising pair). The patch cache is built from them
with `imrestore.data.patches.build_patch_cache` (--patch sized patches, the train subset only).

    python benchmarks/loader_throughput.py --data /tmp/loader-bench --json build/bench/loader.json
    python benchmarks/loader_throughput.py --data /tmp/loader-bench --device cuda --json build/bench/loader-gpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.resources
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Dataset, RandomSampler

from common import write_json

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from imrestore.data.datamodule import (  # noqa: E402
    DeviceResidentBatches,
    PlanSampler,
    RestorationDataModule,
    Sampling,
    dihedral,
    upload,
)
from imrestore.data.manifest import default_workers  # noqa: E402
from imrestore.data.patches import PatchCache, build_patch_cache  # noqa: E402

WIDTH, HEIGHT = 1280, 720
GOAL = 20.0
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "ihc.png",
          "motorcycle_left.png", "retina.jpg")
ENDLESS = 10**7  # batches per "epoch" of the measured loaders: they never run out during a benchmark


# --------------------------------------------------------------------------------------------- data


def _photo(name: str) -> np.ndarray:
    with importlib.resources.as_file(importlib.resources.files("skimage.data") / name) as path:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))


def _frame(index: int) -> np.ndarray:
    """A natural-looking 1280x720 RGB frame: a mirrored 3x3 tiling of a photo, rotated, scaled and shifted."""
    rng = np.random.default_rng(index)
    photo = _photo(PHOTOS[index % len(PHOTOS)])
    h, w = photo.shape[:2]
    tiled = np.pad(photo, ((h, h), (w, w), (0, 0)), mode="symmetric")
    # An affine map from output pixels to tiled-photo pixels, centred on the middle tile.
    angle = rng.uniform(-0.3, 0.3)
    scale = rng.uniform(0.6, 1.4) * max(h, w) * 1.5 / WIDTH  # tiled pixels per output pixel
    cx, cy = 1.5 * w + rng.uniform(-0.2, 0.2) * w, 1.5 * h + rng.uniform(-0.2, 0.2) * h
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    a, b, d, e = cos, -sin, sin, cos
    c = cx - a * WIDTH / 2 - b * HEIGHT / 2
    f = cy - d * WIDTH / 2 - e * HEIGHT / 2
    warped = Image.fromarray(tiled).transform((WIDTH, HEIGHT), Image.Transform.AFFINE, (a, b, c, d, e, f),
                                              resample=Image.Resampling.BICUBIC)
    return np.asarray(warped, dtype=np.float32)


def _noisy(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    return np.clip(image + rng.normal(0, sigma, image.shape).astype(np.float32), 0, 255).astype(np.uint8)


def _write_pair(job: tuple[Path, int]) -> tuple[str, str]:
    folder, index = job
    clean = _frame(index)
    rng = np.random.default_rng(10_000 + index)
    paths = folder / f"{index:04d}_input.png", folder / f"{index:04d}_target.png"
    Image.fromarray(_noisy(clean, rng, rng.uniform(5, 15))).save(paths[0])
    Image.fromarray(_noisy(clean, rng, 1.0)).save(paths[1])
    return str(paths[0]), str(paths[1])


def ensure_pairs(root: Path, count: int, workers: int, console: Console) -> list[tuple[str, str]]:
    """`count` (input, target) PNG paths under root/pairs, written if missing."""
    folder = root / "pairs"
    wanted = [(str(folder / f"{i:04d}_input.png"), str(folder / f"{i:04d}_target.png")) for i in range(count)]
    missing = [i for i, pair in enumerate(wanted) if not all(Path(p).exists() for p in pair)]
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
        console.print(f"writing {len(missing)} pairs of {WIDTH}x{HEIGHT} PNGs to {folder} ...")
        start = time.perf_counter()
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_write_pair, [(folder, i) for i in missing]))
        console.print(f"  {time.perf_counter() - start:.0f} s")
    return wanted


def ensure_cache(root: Path, pairs: list[tuple[str, str]], patch: int, workers: int, console: Console) -> Path:
    """The train patch cache of `pairs` at root/cache-<patch>-<pairs>, built if missing."""
    cache = root / f"cache-{patch}-{len(pairs)}"
    if not (cache / "cache.json").exists():
        split = pd.DataFrame({
            "pair_id": [Path(inp).stem.removesuffix("_input") for inp, _ in pairs],
            "input_path": [inp for inp, _ in pairs],
            "target_path": [tgt for _, tgt in pairs],
            "input_width": WIDTH,
            "input_height": HEIGHT,
            "subset": "train",
        })
        console.print(f"building a {patch}x{patch} patch cache at {cache} ...")
        build_patch_cache(split, cache, size=patch, step=patch, workers=workers, progress=False)
    return cache


# --------------------------------------------------------------------------------------------- the reference


class PngCropPairs(Dataset):
    """BasicSR's disk backend, per sample: decode a PNG pair, aligned random crop, random flip/rotation."""

    def __init__(self, pairs: list[tuple[str, str]], crop: int) -> None:
        self.pairs, self.crop = pairs, crop

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng()  # fresh entropy per sample, as BasicSR's global `random`
        images = []
        for path in self.pairs[index]:
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("RGB")))
        height, width = images[0].shape[:2]
        y, x = rng.integers(0, height - self.crop + 1), rng.integers(0, width - self.crop + 1)
        transform = int(rng.integers(0, 8))
        return tuple(
            torch.from_numpy(np.ascontiguousarray(dihedral(image[y : y + self.crop, x : x + self.crop], transform)
                                                  .transpose(2, 0, 1))).float().div_(255)
            for image in images)


def reference_loader(pairs: list[tuple[str, str]], crop: int, batch: int, workers: int) -> DataLoader:
    dataset = PngCropPairs(pairs, crop)
    sampler = RandomSampler(dataset, replacement=True, num_samples=ENDLESS)
    return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                      persistent_workers=workers > 0)


def ours_loader(cache: Path, crop: int, batch: int, workers: int) -> DataLoader:
    module = RestorationDataModule(cache, crop=crop, batch_size=batch, steps_per_epoch=ENDLESS, num_workers=workers,
                                   device_cache=False, dihedral=True, val_subset=None, device="cpu")
    module.setup("fit")
    return module.train_dataloader()


# --------------------------------------------------------------------------------------------- timing


def cpu_seconds() -> float:
    """CPU time (user + system) used so far by this process and its children, the DataLoader workers."""
    total = 0.0
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def window(batches: Iterator, batch: int, seconds: float, skip: int, sync=lambda: None) -> tuple[float, float]:
    """(crops/s, CPU ms per crop) over at least `seconds` of a stream of batches, after discarding the first
    `skip` (worker start-up and filling the prefetch queue)."""
    for _ in range(skip):
        next(batches)
    sync()
    count, start, cpu = 0, time.perf_counter(), cpu_seconds()
    while True:
        next(batches)
        count += 1
        if count >= 3 and time.perf_counter() - start >= seconds:
            break
    sync()
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return count * batch / wall, 1e3 * cpu / (count * batch)


def fresh_window(make_loader: Callable[[], DataLoader], batch: int, seconds: float, skip: int) -> tuple[float, float]:
    """`window` on a new loader whose workers are shut down afterwards. A loader left waiting would keep its
    workers busy on their prefetched batches (seconds of PNG decoding for the reference) during the next
    loader's window, stealing its cores and inflating its CPU time."""
    before = {child.pid for child in psutil.Process().children()}
    loader = make_loader()
    batches = iter(loader)
    result = window(batches, batch, seconds, skip)
    del batches, loader
    gc.collect()  # the iterator's __del__ shuts the workers down
    deadline = time.monotonic() + 30
    while {child.pid for child in psutil.Process().children()} - before and time.monotonic() < deadline:
        time.sleep(0.05)
    return result


def compare(pairs: list[tuple[str, str]], cache: Path, crop: int, args: argparse.Namespace,
            console: Console) -> dict:
    """Ours against the reference at one crop size: alternating windows, best and median crops/s."""
    makers = {"reference": lambda: reference_loader(pairs, crop, args.batch, args.workers),
              "ours": lambda: ours_loader(cache, crop, args.batch, args.workers)}
    skip = 2 * max(1, args.workers)  # DataLoader's default prefetch_factor 2, per worker
    rates: dict[str, list[float]] = {name: [] for name in makers}
    cpu_ms: dict[str, list[float]] = {name: [] for name in makers}
    for make in makers.values():  # warm-up: fill the page cache with the PNGs and the cache's pages
        fresh_window(make, args.batch, 0.5, skip)
    for r in range(args.repeats):
        for name, make in makers.items():
            rate, cpu = fresh_window(make, args.batch, args.seconds, skip)
            rates[name].append(rate)
            cpu_ms[name].append(cpu)
            console.print(f"  crop {crop}, run {r + 1}/{args.repeats}: {name}: {rate:,.1f} crops/s, "
                          f"{cpu:.2f} CPU ms/crop")
    best = {name: max(values) for name, values in rates.items()}
    median = {name: statistics.median(values) for name, values in rates.items()}
    cpu = {name: min(values) for name, values in cpu_ms.items()}  # least disturbed by other load
    return {
        "crop": crop,
        "reference_crops_per_s": best["reference"],
        "ours_crops_per_s": best["ours"],
        "reference_median_crops_per_s": median["reference"],
        "ours_median_crops_per_s": median["ours"],
        "ratio": best["ours"] / best["reference"],
        "ratio_median": median["ours"] / median["reference"],
        "pass": best["ours"] / best["reference"] >= GOAL,
        # CPU time per crop hardly changes when other processes share the cores; wall time does
        "reference_cpu_ms_per_crop": cpu["reference"],
        "ours_cpu_ms_per_crop": cpu["ours"],
        "cpu_ratio": cpu["reference"] / cpu["ours"],
        "all_crops_per_s": rates,
        "all_cpu_ms_per_crop": cpu_ms,
    }


def device_sweep(cache: Path, device: torch.device, crops: list[int], batches: list[int], seconds: float,
                 repeats: int, console: Console) -> list[dict]:
    """Crops/s of the device-resident executor: the cache uploaded once, every (crop, batch) measured."""
    train = PatchCache(cache, "train")
    start = time.perf_counter()
    inputs, targets = upload(train.inputs, device), upload(train.targets, device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    sync()
    gib = (train.inputs.nbytes + train.targets.nbytes) / 2**30
    console.print(f"uploaded the train cache to {device} ({gib:.2f} GiB) in {time.perf_counter() - start:.1f} s")
    rows = []
    for crop in crops:
        for batch in batches:
            sampling = Sampling(0, batch, len(train), train.patch_size, crop, dihedral=True)
            iterator = iter(DeviceResidentBatches(inputs, targets, sampling, PlanSampler(ENDLESS)))
            window(iterator, batch, 0.2, skip=2, sync=sync)  # warm-up: kernels, caches, allocator
            rates = [window(iterator, batch, seconds, skip=0, sync=sync)[0] for _ in range(repeats)]
            rows.append({"crop": crop, "batch": batch, "best_crops_per_s": max(rates),
                         "median_crops_per_s": statistics.median(rates), "all_crops_per_s": rates})
            console.print(f"  device-resident on {device}: crop {crop}, batch {batch}: {max(rates):,.0f} crops/s")
    return rows


# --------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=100, help="PNG pairs of 1280x720 (default 100)")
    parser.add_argument("--patch", type=int, default=320, help="patch size of the cache (default 320)")
    parser.add_argument("--crops", default="128,256", help="crop sizes (default 128,256)")
    parser.add_argument("--batch", type=int, default=8, help="batch size of the CPU comparison (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of both loaders (default 2)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one measured window (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="windows per loader, alternating (default 3)")
    parser.add_argument("--device", default="cpu", help="where to run the device-resident executor (cpu or cuda)")
    parser.add_argument("--device-batches", default="8,16,32,64", help="its batch sizes (default 8,16,32,64)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of this process, for the device-resident executor on the CPU (default 1)")
    parser.add_argument("--data", type=Path, default=None, help="folder for the PNGs and the cache; kept and reused")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args()

    console = Console() if sys.stdout.isatty() else Console(width=150)  # rich assumes 80 columns in a pipe
    crops = [int(c) for c in args.crops.split(",")]
    device_batches = [int(b) for b in args.device_batches.split(",")]
    device = torch.device(args.device)
    if max(crops) > args.patch:
        raise SystemExit(f"--crops {args.crops}: every crop must be at most --patch {args.patch}")
    torch.set_num_threads(args.threads)
    cores = default_workers()

    with contextlib.ExitStack() as stack:
        root = args.data or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="imrestore-loader-")))
        pairs = ensure_pairs(root, args.pairs, cores, console)
        cache = ensure_cache(root, pairs, args.patch, cores, console)
        patches = len(PatchCache(cache, "train"))
        load_before = os.getloadavg()[0]
        comparison = [compare(pairs, cache, crop, args, console) for crop in crops]
        sweep = device_sweep(cache, device, crops, device_batches, min(args.seconds, 2.0), args.repeats, console)
        load_after = os.getloadavg()[0]

    results = {
        "benchmark": "loader_throughput",
        "cores": cores,
        "workers": args.workers,
        "batch": args.batch,
        "pairs": len(pairs),
        "image_size": [WIDTH, HEIGHT],
        "patch_size": args.patch,
        "train_patches": patches,
        "repeats": args.repeats,
        "window_s": args.seconds,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "load_average": [load_before, load_after],
        "goal_ratio": GOAL,
        "comparison": comparison,
        "device_resident": {"device": str(device), "torch_threads": torch.get_num_threads() if device.type == "cpu"
                            else None, "runs": sweep},
    }

    table = Table(title=f"training crops/s, batch {args.batch}, {args.workers} DataLoader workers each, {cores} cores "
                        f"({args.pairs} PNG pairs {WIDTH}x{HEIGHT}; cache of {patches} patches {args.patch}^2)")
    columns = ("crop", "loader", "best crops/s", "median crops/s", "vs reference (best)", "goal", "CPU ms/crop",
               "vs reference (CPU)")
    for column in columns:
        table.add_column(column, justify="left" if column == "loader" else "right")
    for row in comparison:
        crop = f"{row['crop']}^2"
        table.add_row(crop, "reference: PIL-decode PNG pair + random crop, per sample",
                      f"{row['reference_crops_per_s']:,.1f}", f"{row['reference_median_crops_per_s']:,.1f}", "1.0x", "",
                      f"{row['reference_cpu_ms_per_crop']:.2f}", "1.0x")
        verdict = "[green]PASS[/green]" if row["pass"] else "[red]FAIL[/red]"
        table.add_row(crop, "ours: RestorationDataModule, CPU path (memmap crops)", f"{row['ours_crops_per_s']:,.1f}",
                      f"{row['ours_median_crops_per_s']:,.1f}", f"{row['ratio']:.1f}x", f">= {GOAL:.0f}x {verdict}",
                      f"{row['ours_cpu_ms_per_crop']:.2f}", f"{row['cpu_ratio']:.1f}x")
    console.print(table)

    where = (f"on the CPU, in-process, {torch.get_num_threads()} torch thread(s): a check of the code path, not a "
             "training setup" if device.type == "cpu" else f"on {results['machine']['gpu']}")
    device_table = Table(title=f"device-resident path (cache uploaded once, crops gathered on the device) {where}")
    for column in ("crop", "batch", "best crops/s", "median crops/s"):
        device_table.add_column(column, justify="right")
    for row in sweep:
        device_table.add_row(f"{row['crop']}^2", str(row["batch"]), f"{row['best_crops_per_s']:,.0f}",
                             f"{row['median_crops_per_s']:,.0f}")
    console.print(device_table)
    if max(results["load_average"]) > 0.5:
        console.print(f"[yellow]note: 1-minute load average {load_before:.1f} before, {load_after:.1f} after: other "
                      f"processes shared the {cores} cores[/yellow]")
    write_json(results, args.json, console)


if __name__ == "__main__":
    main()
