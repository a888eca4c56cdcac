"""Throughput of `imrestore.data.manifest.build_manifest` (the validation pass), against plain decoding in the same run.

Goal (from the issue): validation throughput >= 0.8 x cores x the single-core decode rate.

The reference is the least a validator can do: one process, `PIL.Image.open(p).load()` for every input and
target path, nothing else. Ours fully decodes too, and also hashes every file (sha256), copies the pixels into
numpy and computes per-pair statistics, in `cores` worker processes. A second run of ours with workers=1 shows
the per-image cost of that extra work; a decode-only reference in `cores` processes shows how well plain
decoding itself scales on this machine (the ceiling for any parallel validator). All runs read the same files,
alternating, after one warm-up pass so the page cache is warm for each; the table shows best and median
images/s (2 images per pair) and CPU ms per image. A per-step profile (single process, a sample of pairs) says
where the time goes.

Other processes on the machine only ever slow runs down, so the verdict uses each variant's best run. CPU time
per image is nearly immune to such load: reference CPU ms/image / ours' (N workers) CPU ms/image is the goal
ratio ours would reach with a full core per worker, printed as the load-proof ceiling.

The dataset is a GoPro layout written into a temp dir (or --data DIR, kept; a later run reuses it, all of it or
the first --pairs pairs): N pairs (default 200) of 1280x720 RGB
PNGs, panning crops of scikit-image's bundled photos with sensor-like noise; `blur` is the average of shifted
crops (as GoPro's blur is an average of frames); `blur_gamma` holds hard links to `blur` (validation reads
only blur and sharp, but the layout check wants the folder).

    python benchmarks/validation_throughput.py --pairs 200 --repeats 3 --json build/bench/validation.json
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import pickle
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from common import write_json

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from imrestore.data.layouts import Pair, list_pairs  # noqa: E402
from imrestore.data.manifest import _pair_statistics, _png_header, build_manifest, default_workers, inspect_pair  # noqa: E402

WIDTH, HEIGHT = 1280, 720
FRAMES_PER_SEQUENCE = 20
GOAL = 0.8
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")


# --------------------------------------------------------------------------------------------- dataset


def _canvas(seq_index: int) -> np.ndarray:
    """A photo scaled to more than a frame, with a soft lighting gradient, as float32 RGB in [0, 255]."""
    import skimage.data

    photo = getattr(skimage.data, PHOTOS[seq_index % len(PHOTOS)])()
    if photo.ndim == 2:
        photo = np.stack([photo] * 3, axis=-1)
    photo = photo[..., :3]
    big = Image.fromarray(photo).resize((WIDTH + 320, HEIGHT + 240), Image.Resampling.BICUBIC)
    canvas = np.asarray(big, dtype=np.float32)
    rng = np.random.default_rng(seq_index)
    y, x = np.mgrid[0 : canvas.shape[0], 0 : canvas.shape[1]].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    light = 0.85 + 0.3 * ((np.cos(angle) * x + np.sin(angle) * y) / max(canvas.shape[:2]) % 1.0)
    return canvas * light[..., None]


def _crop(canvas: np.ndarray, ox: float, oy: float) -> np.ndarray:
    ox, oy = int(round(ox)), int(round(oy))
    return canvas[oy : oy + HEIGHT, ox : ox + WIDTH]


def _noisy_u8(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    return np.clip(image + rng.normal(0, sigma, image.shape).astype(np.float32), 0, 255).astype(np.uint8)


def _write_sequence(job: tuple[Path, str, int, int]) -> int:
    """Write `frames` sharp/blur/blur_gamma frames of one sequence; return bytes written."""
    folder, name, seq_index, frames = job
    canvas = _canvas(seq_index)
    rng = np.random.default_rng(1000 + seq_index)
    # a slow pan across the canvas, with a different direction per sequence
    vx, vy = rng.uniform(-1, 1, 2) * np.array([300, 220]) / max(frames, 1)
    x0 = 160 - vx * frames / 2
    y0 = 120 - vy * frames / 2
    written = 0
    for frame in range(frames):
        fx, fy = x0 + vx * frame, y0 + vy * frame
        sharp = _noisy_u8(_crop(canvas, fx, fy), rng, 2.0)
        shake = rng.uniform(-6, 6, 2)  # camera shake during the exposure
        blur = np.mean([_crop(canvas, fx + t * shake[0], fy + t * shake[1]) for t in np.linspace(-1, 1, 7)], axis=0)
        blur = _noisy_u8(blur, rng, 1.5)
        file = f"{frame + 1:06d}.png"
        for sub, pixels in (("sharp", sharp), ("blur", blur)):
            path = folder / name / sub / file
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
            written += path.stat().st_size
        gamma = folder / name / "blur_gamma" / file
        gamma.parent.mkdir(parents=True, exist_ok=True)
        gamma.unlink(missing_ok=True)
        os.link(folder / name / "blur" / file, gamma)
    return written


def ensure_gopro(raw: Path, pairs: int | None, workers: int, console: Console) -> list[Pair]:
    """The pairs of GOPRO_Large under `raw`: reused if it exists (the first `pairs` of them), else written
    with `pairs` pairs (default 200), about 80% train and 20% test."""
    root = raw / "GOPRO_Large"
    if root.is_dir():
        found = list_pairs(root, "gopro")
        if pairs and pairs > len(found):
            raise SystemExit(f"{root} holds {len(found)} pairs, fewer than --pairs {pairs}: use another --data")
        console.print(f"reusing {root}: {pairs or len(found)} of its {len(found)} pairs")
        return found[:pairs] if pairs else found
    pairs = pairs or 200
    sequences = max(2, -(-pairs // FRAMES_PER_SEQUENCE))
    test = max(1, sequences // 5)
    counts = [pairs // sequences + (i < pairs % sequences) for i in range(sequences)]
    jobs = []
    for i, frames in enumerate(counts):
        split = "test" if i >= sequences - test else "train"
        name = f"GOPR{372 + i:04d}_{7 + i % 5:02d}_{i % 2:02d}"
        jobs.append((root / split, name, i, frames))
    console.print(f"writing {pairs} pairs of {WIDTH}x{HEIGHT} PNGs in {sequences} sequences to {root} ...")
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        size = sum(pool.map(_write_sequence, jobs))
    console.print(f"  {size / 2 / pairs / 1e6:.2f} MB per PNG, {time.perf_counter() - start:.0f} s")
    return list_pairs(root, "gopro")


# --------------------------------------------------------------------------------------------- runners


def decode_only(paths: list[Path]) -> None:
    for path in paths:
        with Image.open(path) as image:
            image.load()


def _decode_chunk(paths: list[Path]) -> int:
    decode_only(paths)
    return len(paths)


def decode_only_parallel(paths: list[Path], workers: int) -> None:
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_decode_chunk, [paths[i : i + 8] for i in range(0, len(paths), 8)]))


def ours(pairs: list[Pair], workers: int, show_progress: bool) -> None:
    build_manifest(pairs, "gopro", workers=workers, progress=show_progress)


def timed(run: Callable[[], None]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and of the worker processes it reaped)."""
    cpu0, start = os.times(), time.perf_counter()
    run()
    wall, cpu1 = time.perf_counter() - start, os.times()
    cpu = sum(cpu1[i] - cpu0[i] for i in range(4))  # user, system, children's user, children's system
    return wall, cpu


def profile(pairs: list[Pair]) -> dict[str, float]:
    """Seconds per image of each step of `inspect_image`/`inspect_pair`, one process, on `pairs`."""
    steps = {k: 0.0 for k in ("read_bytes", "sha256", "open+load (decode)", "np.asarray copy", "png header",
                               "pair statistics", "inspect_pair (all of it)", "pickle+unpickle row")}
    row_bytes = 0
    for pair in pairs:
        pixels = []
        for path in (pair.input, pair.target):
            t0 = time.perf_counter()
            data = path.read_bytes()
            t1 = time.perf_counter()
            hashlib.sha256(data).hexdigest()
            t2 = time.perf_counter()
            with Image.open(path) as image:
                image.load()
                t3 = time.perf_counter()
                pixels.append(np.asarray(image))
                t4 = time.perf_counter()
            _png_header(data)
            t5 = time.perf_counter()
            for key, dt in zip(list(steps)[:5], (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                steps[key] += dt
        t0 = time.perf_counter()
        _pair_statistics(pixels[0], pixels[1])
        t1 = time.perf_counter()
        row = inspect_pair(pair)
        t2 = time.perf_counter()
        blob = pickle.dumps((pair, row))  # what crosses between processes: the pair out, the row back
        pickle.loads(blob)
        t3 = time.perf_counter()
        row_bytes += len(blob)
        steps["pair statistics"] += t1 - t0
        steps["inspect_pair (all of it)"] += t2 - t1
        steps["pickle+unpickle row"] += t3 - t2
    images = 2 * len(pairs)
    result = {k: v / images for k, v in steps.items()}
    result["pickled bytes per pair"] = row_bytes / len(pairs)
    return result


# --------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=None,
                        help="image pairs to generate (default 200), or to use of a reused --data (default all)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant, alternating (default 3)")
    parser.add_argument("--workers", type=int, default=None, help="workers for ours (default: usable cores)")
    parser.add_argument("--profile-pairs", type=int, default=20, help="pairs in the per-step profile (0: skip)")
    parser.add_argument("--no-parallel-reference", action="store_true", help="skip the decode-only run in N processes")
    parser.add_argument("--progress", action="store_true", help="show build_manifest's rich progress bars")
    parser.add_argument("--data", type=Path, default=None, help="folder holding (or to receive) GOPRO_Large; kept")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args()

    console = Console() if sys.stdout.isatty() else Console(width=120)  # rich assumes 80 columns in a pipe
    cores = default_workers()
    workers = args.workers or cores
    with contextlib.ExitStack() as stack:
        raw = args.data or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="imrestore-bench-")))
        pairs = ensure_gopro(raw, args.pairs, cores, console)
        paths = [p for pair in pairs for p in (pair.input, pair.target)]
        images = len(paths)
        png_bytes = sum(p.stat().st_size for p in paths)

        variants: dict[str, Callable[[], None]] = {
            "reference: decode, 1 process": lambda: decode_only(paths),
            f"ours: build_manifest, {workers} workers": lambda: ours(pairs, workers, args.progress),
            "ours: build_manifest, 1 worker": lambda: ours(pairs, 1, args.progress),
        }
        if not args.no_parallel_reference:
            variants[f"reference: decode, {workers} processes"] = lambda: decode_only_parallel(paths, workers)
        ref_name, par_name, one_name = list(variants)[:3]

        load_before = os.getloadavg()[0]
        console.print(f"warm-up: decoding {images} images once ({png_bytes / 1e6:.0f} MB of PNG) ...")
        timed(variants[ref_name])
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(args.repeats):
            for name, run in variants.items():
                wall, cpu_s = timed(run)
                seconds[name].append(wall)
                cpu[name].append(cpu_s)
                console.print(f"  run {r + 1}/{args.repeats}: {name}: {wall:.2f} s wall, {cpu_s:.2f} s CPU")
        steps = profile(pairs[: args.profile_pairs]) if args.profile_pairs else {}

    rate = {name: {"best": images / min(s), "median": images / statistics.median(s)} for name, s in seconds.items()}
    cpu_ms = {name: 1e3 * min(c) / images for name, c in cpu.items()}  # least disturbed by other load

    def ratios(stat: str) -> dict[str, float]:
        ref, par, one = rate[ref_name][stat], rate[par_name][stat], rate[one_name][stat]
        out = {"goal": par / (ref * cores), "work": one / ref, "efficiency": par / (one * cores)}
        if len(variants) > 3:
            out["reference_efficiency"] = rate[list(variants)[3]][stat] / (ref * cores)
        return out

    # Other processes on the machine only ever slow a run down, so the best run of each is the cleanest
    # estimate; the verdict uses best, the median is shown beside it.
    best, median = ratios("best"), ratios("median")
    ref, par, one = rate[ref_name]["best"], rate[par_name]["best"], rate[one_name]["best"]
    ratio = best["goal"]
    # What ours would reach with a full core per worker and no scheduling loss: CPU time per image is
    # barely changed by other processes sharing the cores, wall time is, so this is the load-proof bound.
    ceiling = cpu_ms[ref_name] / cpu_ms[par_name]
    results = {
        "benchmark": "validation_throughput",
        "cores": cores,
        "workers": workers,
        "pairs": len(pairs),
        "images": images,
        "image_size": [WIDTH, HEIGHT],
        "mean_png_bytes": png_bytes / images,
        "repeats": args.repeats,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        # other work on the machine skews timings: 1-minute load average before the first and after the last run
        "load_average": [load_before, os.getloadavg()[0]],
        "variants": {
            name: {
                "best_images_per_s": rate[name]["best"],
                "median_images_per_s": rate[name]["median"],
                "best_cpu_ms_per_image": cpu_ms[name],
                "all_s": s,
                "all_cpu_s": cpu[name],
            }
            for name, s in seconds.items()
        },
        # best runs (images/s); the verdict
        "reference_images_per_s": ref,
        "ours_images_per_s": par,
        "ours_1_worker_images_per_s": one,
        "ratio_ours_vs_reference_x_cores": ratio,
        "goal_ratio": GOAL,
        "pass": ratio >= GOAL,
        # the goal ratio's two factors, extra work per image (ours 1 worker / reference) x parallel efficiency
        # (ours N workers / (ours 1 worker x cores)); "reference_efficiency": plain decode in N processes
        "ratios_best": best,
        "ratios_median": median,
        # CPU time per image is barely touched by other load: the work factor in CPU time, and the ceiling of
        # the goal ratio (reference CPU ms/image / ours' CPU ms/image in N workers, pool overhead included)
        "cpu_work_ratio_reference_vs_ours_1_worker": cpu_ms[ref_name] / cpu_ms[one_name],
        "cpu_ceiling_ratio": ceiling,
        "pass_cpu_ceiling": ceiling >= GOAL,
        "profile_s_per_image": steps,
    }

    table = Table(title=f"validation of {len(pairs)} GoPro pairs ({images} PNGs, {WIDTH}x{HEIGHT}), "
                        f"{cores} cores, {args.repeats} runs each")
    columns = ("variant", "best s", "median s", "best img/s", "median img/s", "best vs ref", "best CPU ms/img")
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, s in seconds.items():
        table.add_row(name, f"{min(s):.2f}", f"{statistics.median(s):.2f}", f"{rate[name]['best']:.1f}",
                      f"{rate[name]['median']:.1f}", f"{rate[name]['best'] / ref:.2f}x", f"{cpu_ms[name]:.1f}")
    console.print(table)
    if max(results["load_average"]) > 0.5:
        console.print(f"[yellow]note: 1-minute load average {load_before:.1f} before, {results['load_average'][1]:.1f} "
                      f"after: other processes shared the {cores} cores, so parallel numbers are pessimistic[/yellow]")
    verdict = "[green]PASS[/green]" if results["pass"] else "[red]FAIL[/red]"
    for label, r in (("best", best), ("median", median)):
        console.print(
            f"{label:>6}: ours / (reference x {cores} cores) = {r['goal']:.2f} (goal >= {GOAL})"
            + (f" {verdict}" if label == "best" else "")
            + f" = per-image work {r['work']:.2f} x parallel efficiency {r['efficiency']:.2f}"
            + (f"; plain decode in {workers} processes scales {r['reference_efficiency']:.2f}"
               if "reference_efficiency" in r else "")
        )
    console.print(
        f"CPU time per image: reference / ours 1 worker = {results['cpu_work_ratio_reference_vs_ours_1_worker']:.2f} "
        f"(the work factor); reference / ours {workers} workers = {ceiling:.2f} = the goal ratio's ceiling with a "
        f"full core per worker " + ("[green]>=[/green]" if ceiling >= GOAL else "[red]<[/red]") + f" {GOAL}"
    )
    if steps:
        prof = Table(title=f"where one image's time goes (1 process, first {min(args.profile_pairs, len(pairs))} pairs)")
        prof.add_column("step")
        prof.add_column("ms per image", justify="right")
        prof.add_column("share of inspect_pair", justify="right")
        total = steps["inspect_pair (all of it)"]
        for name, value in steps.items():
            if name == "pickled bytes per pair":
                prof.add_row(name, f"{value:.0f} B", "")
            else:
                prof.add_row(name, f"{value * 1e3:.2f}", f"{value / total:.0%}")
        console.print(prof)
    write_json(results, args.json, console)


if __name__ == "__main__":
    main()
