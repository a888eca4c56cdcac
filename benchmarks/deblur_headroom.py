"""How much of the deblur sample is learnable, and by what: linear filters as the reference.

On the pipeline's own GoPro-like split (run from the repository root after `make repro`):

1. **one linear filter for every frame** (K×K, shared by the channels), fitted by least squares on the train
   frames and applied to the test frames: what a network learns first, and all a fixed sharpening can do;
2. **one linear filter per test frame**, fitted on that frame itself: an oracle that knows each frame's blur,
   the headroom a network that infers the blur could reach;
3. with `--train-steps N`, the paper's network (or `--arch nafnet`) trained N steps (the cpu preset's
   optimiser, batch 4 × 64²) on blur synthesised afresh for every crop (the sample's camera shake, no roll):
   kernel diversity without limit, to tell a data limit from a learning-speed limit. It trains on two kinds
   of content (`--contents`, both by default): the train photographs less the val sequence's (the
   reference), and dead-leaves images (Lee, Mumford & Huang 2001: occluding discs with a scale-invariant r⁻³
   radius law, coloured from the train photographs' pixels), which Achddou et al. (2021) found to transfer
   to real photographs; they have sharp edges at every orientation and scale, where blur shows most. Each
   network is measured on the val frames and on the test frames, and with `--eval-every K` on the val
   frames every K steps as well: a learning curve against training seconds.

The test split is only measured here, never tuned to. Results: benchmarks/results/deblur_headroom.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from rich.console import Console

from common import RESULTS, machine_facts, new_table, write_json


def _frames(split: pd.DataFrame, subset: str) -> list[tuple[np.ndarray, np.ndarray]]:
    rows = split[split["subset"] == subset]
    load = lambda path: np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255  # noqa: E731
    return [(load(r.input_path), load(r.target_path)) for r in rows.itertuples()]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((np.rint(np.clip(a, 0, 1) * 255) / 255 - b) ** 2)))


def _windows(image: np.ndarray, k: int) -> np.ndarray:
    pad = k // 2
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    return sliding_window_view(padded, (k, k), axis=(0, 1))  # H × W × C × k × k


def fit_filter(pairs, k: int, samples_per_frame: int, rng: np.random.Generator) -> np.ndarray:
    """The k×k filter minimising the squared error from blurred to sharp over random pixels of `pairs`."""
    rows, targets = [], []
    for blurred, sharp in pairs:
        windows = _windows(blurred, k).reshape(-1, k * k)
        pick = rng.integers(0, len(windows), samples_per_frame)
        rows.append(windows[pick])
        targets.append(sharp.reshape(-1)[pick])
    return np.linalg.lstsq(np.concatenate(rows), np.concatenate(targets), rcond=None)[0].reshape(k, k)


def apply_filter(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return np.tensordot(_windows(image, len(kernel)), kernel, axes=([3, 4], [0, 1]))


CONTENTS = ("photos", "dead_leaves")  # what the network trains on: the train photographs, or dead-leaves images
DEAD_LEAVES_IMAGES = 100  # 192² each: more distinct content than the three train photos' crops
MAX_DISCS = 100_000  # a 192² image is covered after about 10⁴ discs; the bound only guarantees an end


def dead_leaves(rng: np.random.Generator, size: int, palette: np.ndarray, *, min_radius: float = 1.5,
                supersample: int = 2) -> np.ndarray:
    """A size×size dead-leaves image, float32 RGB in [0, 1]: opaque discs dropped front to back until covered.

    Radii follow the scale-invariant density ∝ r⁻³ between `min_radius` and size/2 pixels; every disc takes a
    colour drawn from `palette` (N×3). Rendered `supersample`× larger and reduced with Lanczos, so the edges are
    anti-aliased as a lens would leave them.
    """
    side = size * supersample
    low, high = (min_radius * supersample) ** -2.0, (side / 2) ** -2.0
    image = np.zeros((side, side, 3), np.float32)
    empty = np.ones((side, side), bool)
    rows, cols = np.mgrid[0:side, 0:side]
    for _ in range(MAX_DISCS):
        if not empty.any():
            break
        radius = (low - rng.random() * (low - high)) ** -0.5  # inverse CDF of the r⁻³ law
        cx, cy = rng.uniform(-radius, side + radius, size=2)
        x0, x1 = max(0, int(cx - radius)), min(side, int(cx + radius) + 2)
        y0, y1 = max(0, int(cy - radius)), min(side, int(cy + radius) + 2)
        if x0 >= x1 or y0 >= y1:
            continue
        window = (slice(y0, y1), slice(x0, x1))
        disc = ((cols[window] - cx) ** 2 + (rows[window] - cy) ** 2 <= radius**2) & empty[window]
        image[window][disc] = palette[rng.integers(len(palette))]
        empty[window][disc] = False
    image[empty] = palette.mean(axis=0)  # pixels no disc reached, if any, after MAX_DISCS
    reduced = Image.fromarray(np.rint(image * 255).astype(np.uint8)).resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(reduced, dtype=np.float32) / 255


CROP = 64  # the cpu preset's training crop


def render_shake(rng: np.random.Generator, photo: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """(blurred, sharp) uint8 crops of `photo` under the sample's camera shake (no roll), rendered as the sample
    renders a frame: one bicubic view per 240 fps sub-frame, averaged; the sharp crop is the middle view."""
    from imrestore.acquire import degradations as deg

    margin = 60
    x, y = rng.uniform(margin, photo.shape[1] - margin), rng.uniform(margin, photo.shape[0] - margin)
    path = deg.camera_trajectory(rng, int(rng.choice([7, 9, 11, 13])), speed_px=rng.uniform(0.5, 1.5),
                                 rotation_speed_deg=0.0, max_shift_px=24, max_rotation_deg=0.0)
    # Every view reads within crop/2 + 24 + 2 px of (x, y): warping that window, not the photo, is 25% faster.
    left, top = int(x) - margin, int(y) - margin
    window = photo[top : top + 2 * margin + 1, left : left + 2 * margin + 1]
    views = [deg.to_uint8(deg.render_view(window, x - left + dx, y - top + dy, 0.0, crop, crop)) for dx, dy, _ in path]
    sharp, blurred, _ = deg.gopro_triplet(views)
    return blurred, sharp


class LearningCurve:
    """Points measured while a network trains, each at the training seconds so far: the clock leaves out the
    time spent measuring, so a curve reads against training time alone."""

    def __init__(self) -> None:
        self.points: list[dict] = []
        self.begin = time.perf_counter()

    def training_seconds(self) -> float:
        return time.perf_counter() - self.begin - sum(point["eval_seconds"] for point in self.points)

    def add(self, step: int, key: str, measure) -> dict:
        """Call `measure()` and record its value under `key` at `step`; returns the point."""
        seconds, clock = self.training_seconds(), time.perf_counter()
        value = measure()
        self.points.append({"step": step, "train_seconds": seconds, key: value,
                            "eval_seconds": time.perf_counter() - clock})
        return self.points[-1]


def train_on_the_fly(steps: int, images: list[np.ndarray], seed: int, *, arch: str = "paper",
                     eval_every: int = 0, on_eval=None, blur=render_shake) -> object:
    """The `arch` network after `steps` steps on crops of `images` (float RGB) blurred afresh each time.

    `blur(rng, photo, crop)` makes one (blurred, sharp) uint8 pair from a random place in `photo`; by default the
    sample's camera shake (`render_shake`). Every `eval_every` steps (0: never) `on_eval(step, net)` is called
    with the network in eval mode, to draw a learning curve; training resumes in train mode after it.
    """
    import torch

    from imrestore.models.network import ModelConfig, build_network
    from imrestore.training import OptimConfig, learning_rate_factor, restoration_loss

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)

    net, optim = build_network(ModelConfig(arch=arch)), OptimConfig(max_steps=steps, warmup_steps=10)
    opt = torch.optim.AdamW(net.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: learning_rate_factor(step, optim))
    to_batch = lambda arrays: torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    for step in range(1, steps + 1):
        blurred, sharp = zip(*(blur(rng, images[rng.integers(len(images))], CROP) for _ in range(4)))
        loss = restoration_loss(optim.loss, net(to_batch(blurred)), to_batch(sharp))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        schedule.step()
        if eval_every and on_eval is not None and step % eval_every == 0 and step < steps:
            on_eval(step, net.eval())
            net.train()
    return net.eval()


def training_content(photos_dir: Path, *, smoke: bool = False, contents: tuple[str, ...] = CONTENTS,
                     held_out: frozenset[str] = frozenset()) -> dict[str, list[np.ndarray]]:
    """The sample's train photographs, and dead-leaves images coloured from their pixels: the `contents` named.

    The photographs of the sequences in `held_out` (the split's val sequences) are left out, so that the val
    frames show content the network has not trained on, as the test frames do.
    """
    from imrestore.acquire.sample import GoproSampleConfig, photo_sizes, plan_gopro_sample

    plans = plan_gopro_sample(photo_sizes(photos_dir), GoproSampleConfig())
    names = sorted({plan.photo for plan in plans if plan.split == "train" and plan.name not in held_out})
    photos = [np.asarray(Image.open(photos_dir / name).convert("RGB"), dtype=np.float32) / 255 for name in names]
    rng = np.random.default_rng(0)
    palette = np.concatenate([p.reshape(-1, 3)[rng.integers(0, p.shape[0] * p.shape[1], 20_000)] for p in photos])
    count, size = (2, 128) if smoke else (DEAD_LEAVES_IMAGES, 192)  # ≥ 2 × the crop margin
    made = {"photos": lambda: photos, "dead_leaves": lambda: [dead_leaves(rng, size, palette) for _ in range(count)]}
    return {content: made[content]() for content in contents}


def restore(net, blurred: np.ndarray) -> np.ndarray:
    """One full frame through the network, tiled as the evaluate stage does."""
    import torch

    from imrestore.evaluation.inference import InferenceConfig, restore_images

    batch = torch.from_numpy(blurred).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        return restore_images(net, batch, InferenceConfig())[0].permute(1, 2, 0).double().numpy()


def main() -> None:
    from imrestore.models.network import ARCHITECTURES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", type=Path, default=Path("build/splits/gopro.csv"))
    parser.add_argument("--kernel", type=int, default=15, help="filter side (odd; default 15)")
    parser.add_argument("--train-steps", type=int, default=0, help="also train on blur made afresh (0: skip)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds for --train-steps")
    parser.add_argument("--arch", choices=ARCHITECTURES, default="paper",
                        help="the network --train-steps trains (model.arch; default the paper's)")
    parser.add_argument("--contents", nargs="+", choices=CONTENTS, default=list(CONTENTS),
                        help="what --train-steps trains on (default both)")
    parser.add_argument("--eval-every", type=int, default=0,
                        help="also measure the val frames every N training steps: a learning curve (0: at the end only)")
    parser.add_argument("--smoke", action="store_true", help="a few frames and a 5×5 filter: checks the script")
    parser.add_argument("--json", type=Path, default=None, help=f"default {RESULTS}/deblur_headroom.json")
    args = parser.parse_args()
    console, rng, start = Console(), np.random.default_rng(0), time.perf_counter()
    split = pd.read_csv(args.split)
    train, val, test = (_frames(split, subset) for subset in ("train", "val", "test"))
    k, samples = (5, 500) if args.smoke else (args.kernel, 6000)
    if args.smoke:
        train, val, test = train[:2], val[:1], test[:2]
    shared = fit_filter(train, k, samples, rng)
    rows = []
    for index, (blurred, sharp) in enumerate(test):
        own = fit_filter([(blurred, sharp)], k, 4 * samples, rng)
        rows.append({"frame": index, "input": psnr(blurred, sharp), "one_filter": psnr(apply_filter(blurred, shared), sharp),
                     "own_filter": psnr(apply_filter(blurred, own), sharp)})
    results = {"what": "test PSNR (dB) of the deblur sample: input, one least-squares filter fitted on the train "
                       "frames, one fitted on each test frame itself (oracle)",
               "kernel": k, "frames": rows, "machine": machine_facts()}
    means = {key: float(np.mean([r[key] for r in rows])) for key in ("input", "one_filter", "own_filter")}
    if args.train_steps:
        if not val:
            raise SystemExit(f"{args.split}: --train-steps measures on the val frames, and the split has none "
                             "(set split.gopro.val_fraction > 0)")
        results["train_steps"], results["arch"] = args.train_steps, args.arch
        results["val_input"] = float(np.mean([psnr(blurred, sharp) for blurred, sharp in val]))
        results["trained"], results["seeds"] = {}, args.seeds
        on_val = lambda net: float(np.mean([psnr(restore(net, blurred), sharp) for blurred, sharp in val]))  # noqa: E731
        held_out = frozenset(split.loc[split["subset"] == "val", "sequence"])
        for content, images in training_content(Path("data/sample_photos"), smoke=args.smoke,
                                                contents=tuple(args.contents), held_out=held_out).items():
            per_seed = {"val": [], "test": [], "train_seconds": []}
            curves, per_frame = [], np.zeros(len(test))
            for seed in args.seeds:
                curve = LearningCurve()

                def measure(step: int, net, curve: LearningCurve = curve, content: str = content,
                            seed: int = seed) -> None:
                    point = curve.add(step, "val", lambda: on_val(net))
                    console.print(f"{content}, seed {seed}, step {step} ({point['train_seconds']:.0f} s of training): "
                                  f"val {point['val'] - results['val_input']:+.3f} dB over the input")

                net = train_on_the_fly(args.train_steps, images, seed=seed, arch=args.arch,
                                       eval_every=args.eval_every, on_eval=measure)
                per_seed["train_seconds"].append(curve.training_seconds())
                on_test = [psnr(restore(net, blurred), sharp) for blurred, sharp in test]
                per_frame += np.array(on_test) / len(args.seeds)
                per_seed["test"].append(float(np.mean(on_test)))
                per_seed["val"].append(on_val(net))
                curves.append(curve.points + [{"step": args.train_steps, "train_seconds": per_seed["train_seconds"][-1],
                                        "val": per_seed["val"][-1]}])
            for row, value in zip(rows, per_frame):
                row[f"network_{content}"] = float(value)  # mean over the seeds
            means[f"network_{content}"] = float(np.mean(per_seed["test"]))
            results["trained"][content] = {
                **{key: float(np.mean(values)) for key, values in per_seed.items()},
                **{f"{key}_std": float(np.std(values, ddof=1)) if len(values) > 1 else None
                   for key, values in per_seed.items() if key != "train_seconds"},
                "per_seed": per_seed, **({"val_curves": curves} if args.eval_every else {})}
    results["mean"] = means
    results["seconds"] = time.perf_counter() - start
    if args.train_steps:
        trained = new_table(f"the {args.arch} network, {args.train_steps} steps on blur made afresh, seeds {args.seeds} "
                            "(PSNR gain over the input, dB; ± the std across seeds)",
                            ("content", f"val ({len(val)} frames)", f"test ({len(test)} frames)"), left=("content",))
        spread = lambda row, key: f" ± {row[key + '_std']:.2f}" if row[key + "_std"] is not None else ""  # noqa: E731
        for content, row in results["trained"].items():
            trained.add_row(content, f"{row['val'] - results['val_input']:+.2f}{spread(row, 'val')}",
                            f"{row['test'] - means['input']:+.2f}{spread(row, 'test')}")
        console.print(trained)
        if args.eval_every:
            curve_table = new_table(f"val PSNR gain over the input (dB) during training, per seed {args.seeds}",
                                    ("content", "step", "training s", "val gain"), left=("content",))
            for content, row in results["trained"].items():
                for seed_curve in row["val_curves"]:
                    for point in seed_curve:
                        curve_table.add_row(content, str(point["step"]), f"{point['train_seconds']:.0f}",
                                            f"{point['val'] - results['val_input']:+.3f}")
            console.print(curve_table)
    table = new_table(f"deblur sample, {len(rows)} test frames (PSNR dB)",
                      ("method", "PSNR", "gain over input"), left=("method",))
    for key, value in means.items():
        table.add_row(key, f"{value:.2f}", f"{value - means['input']:+.2f}")
    console.print(table)
    write_json(results, args.json or (None if args.smoke else RESULTS / "deblur_headroom.json"), console)


if __name__ == "__main__":
    main()
