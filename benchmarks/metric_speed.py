"""SSIM and PSNR of a batch of 1280×720 pairs: `imrestore.evaluation.metrics` (batched torch) against skimage, same run.

The pairs are realistic, not random: scikit-image's photographs (astronaut, coffee, chelsea, rocket, ...)
resized to 1280×720 are the targets; each prediction is its target after a mild blur (σ = 1) plus Gaussian
noise (σ = 8), rounded to uint8 -- roughly what a restoration network hands back. Both sides get the same
protocol: skimage's `structural_similarity(target, pred, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255, channel_axis=-1)` and `peak_signal_noise_ratio(..., data_range=255)`,
called image by image on H×W×3 numpy arrays (as a per-image evaluation loop would), against one call of
`imrestore.evaluation.metrics.ssim` / `psnr` on the N×3×H×W uint8 batch. After a warm-up, the two alternate for
`--repeats` repetitions; the table shows the median wall seconds per batch, the ratio skimage / ours (goal:
>= 10× on 2 CPU cores), the same for the process's CPU time (all threads) and, as a numerics check, the
largest absolute difference of the per-image values. It also times `image_metrics` (all five protocols).

    python benchmarks/metric_speed.py --json build/bench/metrics.json
    python benchmarks/metric_speed.py --device cuda --json build/bench/metrics-gpu.json   # GPU machine
    python benchmarks/metric_speed.py --threads 1    # one core each: skimage is single-threaded

On a machine shared with other jobs the wall times swing, and torch's threads suffer most: every op ends in
a barrier that waits for whichever thread the scheduler parked, so the wall-clock ratio can collapse while
skimage (one thread) only slows in proportion. With --threads 1 the CPU-time ratio is the per-core speedup,
unaffected by other load; on an idle machine the wall-clock ratio is what a user sees.
"""

from __future__ import annotations

import statistics

import numpy as np
import torch
from rich.console import Console
from scipy import ndimage
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.transform import resize

from common import (alternate, argument_parser, machine_facts, new_table, repeat,  # first: puts src/ on sys.path
                    synchronizer, write_json)

from imrestore.evaluation.metrics import image_metrics, psnr, ssim

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina")
HEIGHT, WIDTH = 720, 1280


def make_pairs(count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` (target, pred) pairs, N×720×1280×3 uint8 each, from scikit-image's colour photographs."""
    rng = np.random.default_rng(0)
    targets, preds = [], []
    for index in range(count):
        photo = getattr(data, PHOTOS[index % len(PHOTOS)])()
        if index >= len(PHOTOS):  # more pairs than photos: mirror, so no two targets are the same
            photo = photo[:, ::-1]
        target = resize(photo, (HEIGHT, WIDTH), order=3, anti_aliasing=True, preserve_range=True)
        target = np.clip(np.round(target), 0, 255)
        pred = ndimage.gaussian_filter(target, (1.0, 1.0, 0)) + rng.normal(0.0, 8.0, target.shape)
        targets.append(target.astype(np.uint8))
        preds.append(np.clip(np.round(pred), 0, 255).astype(np.uint8))
    return np.stack(targets), np.stack(preds)


def skimage_ssim(targets: np.ndarray, preds: np.ndarray) -> list[float]:
    return [
        structural_similarity(t, p, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
                              channel_axis=-1)
        for t, p in zip(targets, preds)
    ]


def skimage_psnr(targets: np.ndarray, preds: np.ndarray) -> list[float]:
    return [peak_signal_noise_ratio(t, p, data_range=255) for t, p in zip(targets, preds)]


def measure(metric: str, reference, ours, sync, repeats: int) -> dict:
    reference_values = np.asarray(reference())  # warm-up, and the numerics check
    our_values = ours().cpu().numpy()
    samples = alternate({"skimage": reference, "ours": ours}, repeats, sync)
    medians = {name: s.median for name, s in samples.items()}
    cpu_medians = {name: statistics.median(s.cpu) for name, s in samples.items()}
    return {
        "metric": metric,
        "seconds": {name: s.wall for name, s in samples.items()},
        "cpu_seconds": {name: s.cpu for name, s in samples.items()},
        "median_s": medians,
        "median_cpu_s": cpu_medians,
        "speedup": medians["skimage"] / medians["ours"],
        "cpu_speedup": cpu_medians["skimage"] / cpu_medians["ours"],
        "max_abs_diff": float(np.max(np.abs(our_values - reference_values))),
        "values": our_values.tolist(),
    }


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--device", default="cpu", help="cpu or cuda, for imrestore.evaluation.metrics (default cpu)")
    parser.add_argument("--images", type=int, default=4, help="1280×720 pairs per batch (default 4)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each side, alternating (default 5)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice, one per core); skimage uses one")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    console = Console()
    device = torch.device(args.device)
    sync = synchronizer(device)
    console.print(f"building {args.images} pairs of {WIDTH}×{HEIGHT} ...")
    targets, preds = make_pairs(args.images)
    # A model's output batch is contiguous N×3×H×W on the device; measure that layout.
    target_batch = torch.from_numpy(targets).permute(0, 3, 1, 2).contiguous().to(device)
    pred_batch = torch.from_numpy(preds).permute(0, 3, 1, 2).contiguous().to(device)

    rows = [
        measure("SSIM", lambda: skimage_ssim(targets, preds), lambda: ssim(pred_batch, target_batch), sync,
                args.repeats),
        measure("PSNR", lambda: skimage_psnr(targets, preds), lambda: psnr(pred_batch, target_batch), sync,
                args.repeats),
    ]
    all_five = repeat(lambda: image_metrics(pred_batch, target_batch), max(1, args.repeats // 2), sync, warmup=1).median

    goal = 10.0
    table = new_table(f"{args.images} pairs of {WIDTH}×{HEIGHT} RGB, seconds per batch (median of {args.repeats}): "
                      f"imrestore.evaluation.metrics on {device}, {torch.get_num_threads()} threads, vs skimage",
                      ("metric", "skimage s", "ours s", "ratio", f"≥ {goal:g}×", "skimage cpu", "ours cpu",
                       "cpu ratio", "max |Δ|"))
    for row in rows:
        table.add_row(
            row["metric"],
            f"{row['median_s']['skimage']:.3g}",
            f"{row['median_s']['ours']:.3g}",
            f"{row['speedup']:.1f}×",
            "yes" if row["speedup"] >= goal else "NO",
            f"{row['median_cpu_s']['skimage']:.3g}",
            f"{row['median_cpu_s']['ours']:.3g}",
            f"{row['cpu_speedup']:.1f}×",
            f"{row['max_abs_diff']:.0e}",
        )
    console.print(table)
    console.print(f"image_metrics (psnr, ssim, psnr_y, ssim_y, ssim_3d) on the batch: {all_five:.4f} s")

    results = {
        "benchmark": "metric_speed",
        "device": str(device),
        "images": args.images,
        "height": HEIGHT,
        "width": WIDTH,
        "repeats": args.repeats,
        "goal_speedup": goal,
        "machine": machine_facts(device),
        "metrics": rows,
        "image_metrics_s": all_five,
    }
    write_json(results, args.json, console)


if __name__ == "__main__":
    main()
