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

The dataset is the GoPro layout of `synthetic.gopro_pairs`, written into a temp dir (or --data DIR, kept; a
later run reuses it, all of it or the first --pairs pairs): N pairs (default 200) of 1280x720 RGB PNGs.

    python benchmarks/validation_throughput.py --pairs 200 --repeats 3 --json build/bench/validation.json
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from common import (alternate, argument_parser, machine_facts, new_table, note_load,  # first: puts src/ on sys.path
                    timed, wide_console, write_json)
from synthetic import HEIGHT, WIDTH, gopro_pairs

from imrestore.data.layouts import Pair
from imrestore.data.manifest import build_manifest, default_workers, inspect_image, inspect_pair

GOAL = 0.8


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


def profile(pairs: list[Pair]) -> dict[str, float]:
    """Seconds per image of each step of `inspect_image`/`inspect_pair`, one process, on `pairs`. The steps
    inside `inspect_image` are redone here from their parts; what `inspect_pair` adds to two `inspect_image`
    calls (the pair statistics, the row) is their difference."""
    steps = {k: 0.0 for k in ("read_bytes", "sha256", "open+load (decode)", "np.asarray copy",
                               "inspect_image (all of it)", "pair statistics + row", "inspect_pair (all of it)",
                               "pickle+unpickle row")}
    row_bytes = 0
    for pair in pairs:
        for path in (pair.input, pair.target):
            t0 = time.perf_counter()
            data = path.read_bytes()
            t1 = time.perf_counter()
            hashlib.sha256(data).hexdigest()
            t2 = time.perf_counter()
            with Image.open(path) as image:
                image.load()
                t3 = time.perf_counter()
                np.asarray(image)
                t4 = time.perf_counter()
            inspect_image(path)
            t5 = time.perf_counter()
            for key, dt in zip(list(steps)[:5], (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                steps[key] += dt
        t0 = time.perf_counter()
        row = inspect_pair(pair)
        t1 = time.perf_counter()
        blob = pickle.dumps((pair, row))  # what crosses between processes: the pair out, the row back
        pickle.loads(blob)
        t2 = time.perf_counter()
        row_bytes += len(blob)
        steps["inspect_pair (all of it)"] += t1 - t0
        steps["pickle+unpickle row"] += t2 - t1
    steps["pair statistics + row"] = steps["inspect_pair (all of it)"] - steps["inspect_image (all of it)"]
    images = 2 * len(pairs)
    result = {k: v / images for k, v in steps.items()}
    result["pickled bytes per pair"] = row_bytes / len(pairs)
    return result


# --------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--pairs", type=int, default=None,
                        help="image pairs to generate (default 200), or to use of a reused --data (default all)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant, alternating (default 3)")
    parser.add_argument("--workers", type=int, default=None, help="workers for ours (default: usable cores)")
    parser.add_argument("--profile-pairs", type=int, default=20, help="pairs in the per-step profile (0: skip)")
    parser.add_argument("--no-parallel-reference", action="store_true", help="skip the decode-only run in N processes")
    parser.add_argument("--progress", action="store_true", help="show build_manifest's rich progress bars")
    parser.add_argument("--data", type=Path, default=None, help="folder holding (or to receive) GOPRO_Large; kept")
    args = parser.parse_args()

    console = wide_console(120)
    cores = default_workers()
    workers = args.workers or cores
    with contextlib.ExitStack() as stack:
        raw = args.data or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="imrestore-bench-")))
        pairs = gopro_pairs(raw, args.pairs, cores, console)
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
        samples = alternate(variants, args.repeats, console=console)
        seconds = {name: s.wall for name, s in samples.items()}
        cpu = {name: s.cpu for name, s in samples.items()}
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
        "machine": machine_facts(),
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

    table = new_table(f"validation of {len(pairs)} GoPro pairs ({images} PNGs, {WIDTH}x{HEIGHT}), "
                      f"{cores} cores, {args.repeats} runs each",
                      ("variant", "best s", "median s", "best img/s", "median img/s", "best vs ref",
                       "best CPU ms/img"), left=("variant",))
    for name, s in seconds.items():
        table.add_row(name, f"{min(s):.2f}", f"{statistics.median(s):.2f}", f"{rate[name]['best']:.1f}",
                      f"{rate[name]['median']:.1f}", f"{rate[name]['best'] / ref:.2f}x", f"{cpu_ms[name]:.1f}")
    console.print(table)
    note_load(console, results["load_average"], cores, ", so parallel numbers are pessimistic")
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
        prof = new_table(f"where one image's time goes (1 process, first {min(args.profile_pairs, len(pairs))} pairs)",
                         ("step", "ms per image", "share of inspect_pair"), left=("step",))
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
