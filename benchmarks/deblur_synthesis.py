"""How the deblur sample's synthesis decides how fast a network learns to deblur, at equal input PSNR.

Two choices of the GoPro-like sample, each against the sample's own in the same run:
- **scale**: the photographs are resized by this factor before they are imaged. The sample enlarges them
  1.25–1.75× to fill its 640×360 frames (hubble_deep_field alone is large enough), which leaves the frames
  without the pixel-level detail a camera records; 0.6 reduces them instead, which keeps it.
- **shake**: `tremor` is the sample's camera path (`degradations.camera_trajectory`, a 4 Hz hand tremor, no
  roll): its velocity wanders within one exposure, so the middle sub-frame, which is the target, sits
  about a pixel from the blur's centroid. `smooth` draws the velocity as noise smoothed over 100 ms (24
  sub-frames), so each exposure's path is nearly straight and the middle sub-frame is near the centroid.

Every setting is measured at the same cost of the blur in dB: its shake speed is calibrated so that the val
crops' input PSNR equals `--input-psnr`. The settings then differ in the blur's length in pixels and its
shape, not in how much it degrades. A network (`--arch`; NAFNet by default, 4× the paper's steps per second)
trains on crops of the train photographs blurred afresh for each crop (`deblur_headroom.train_on_the_fly`),
and its PSNR gain on the val crops is measured every `--eval-every` steps. The val crops come from the val
sequence's photograph, which training never sees. The test split is not used.

Blur is made as the sample makes it: the views along the path are averaged and the target is the middle one.
Here the average is computed as a single convolution with the path's rasterised kernel (bilinear weights at
each sub-frame's offset) instead of one bicubic warp per sub-frame. The two agree to about 50 dB PSNR, within
a level or two of uint8 (tests/test_benchmarks_smoke.py checks it). Run from the repository root after
`make repro`; the committed runs are in benchmarks/results/deblur_synthesis/.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from rich.console import Console

from common import RESULTS, machine_facts, new_table, write_json
from deblur_headroom import LearningCurve, psnr, train_on_the_fly

SHAKES = ("tremor", "smooth")
SUBFRAMES = (7, 9, 11, 13)  # the sample's odd sub-frame counts (download.gopro.sample, 7–13)
SMOOTH_SECONDS = 0.1  # the smooth shake's velocity varies over about this long
SLOWEST = 0.25  # px per sub-frame: where calibration starts (a slower shake can leave a crop unchanged)


def unit_path(rng: np.random.Generator, shake: str) -> np.ndarray:
    """One exposure's camera path at unit speed, (n, 2) offsets in px relative to the middle sub-frame.

    The speed varies per exposure by ×U(0.5, 1.5), as the sample's does per sequence; a path scales linearly with
    its speed, so calibration multiplies these.
    """
    from scipy.ndimage import gaussian_filter1d

    from imrestore.acquire import degradations as deg

    n, speed = int(rng.choice(SUBFRAMES)), rng.uniform(0.5, 1.5)
    if shake == "tremor":
        path = deg.camera_trajectory(rng, n, speed_px=speed, rotation_speed_deg=0.0, max_shift_px=1e6,
                                     max_rotation_deg=0.0)[:, :2]
    else:
        sigma = SMOOTH_SECONDS * deg.GOPRO_FPS
        white = rng.standard_normal((n + int(8 * sigma), 2))
        # White noise smoothed by a Gaussian of σ sub-frames has std 1 / sqrt(2 σ sqrt(π)): normalised to unit speed.
        velocity = gaussian_filter1d(white, sigma, axis=0, mode="constant")[int(4 * sigma) :][:n]
        path = np.cumsum(velocity * speed * math.sqrt(2 * sigma * math.sqrt(math.pi)), axis=0)
    return path - path[n // 2]


def reach(path: np.ndarray) -> int:
    """How many px beyond a crop the views along `path` read (bilinear weights reach one pixel further)."""
    return math.floor(float(np.abs(path).max())) + 2


def random_corner(unit: np.ndarray, photo: np.ndarray, crop: int, margin: int) -> tuple[int, int]:
    """(top, left) of a crop×crop crop with `margin` px of the photo around it, placed at the fractions `unit`
    (two numbers in [0, 1)) of the room there is."""
    room = np.array(photo.shape[:2]) - crop - 2 * margin
    if (room < 1).any():
        raise SystemExit(f"a {photo.shape[1]}×{photo.shape[0]} photograph has no room for a {crop}² crop and the "
                         f"{margin} px its blur reads around it: use a larger --scales value or a smaller --val-size")
    return tuple(int(margin + fraction * size) for fraction, size in zip(unit, room))


def path_kernel(path: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The correlation kernel that averages the views at `path`'s offsets (bilinear weights), over the path's
    bounding box, and the (x, y) offset in px of its first column and row from the middle sub-frame."""
    x0, y0 = (math.floor(value) for value in path.min(axis=0))
    x1, y1 = (math.floor(value) for value in path.max(axis=0))
    kernel = np.zeros((y1 - y0 + 2, x1 - x0 + 2))
    for dx, dy in path - (x0, y0):
        col, row = math.floor(dx), math.floor(dy)
        fx, fy = dx - col, dy - row
        kernel[row : row + 2, col : col + 2] += np.outer([1 - fy, fy], [1 - fx, fx])
    return kernel / len(path), x0, y0


def blurred_crop(photo: np.ndarray, top: int, left: int, crop: int, path: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(blurred, sharp) uint8 crops at (top, left) of `photo` under the camera path `path`: the view at offset
    (dx, dy) sees photo pixel (row + dy, column + dx), as `degradations.render_view` centred there does."""
    import torch
    import torch.nn.functional as F

    kernel, x0, y0 = path_kernel(path)
    rows, cols = kernel.shape
    if top + y0 < 0 or left + x0 < 0 or top + y0 + rows - 1 + crop > photo.shape[0] or \
            left + x0 + cols - 1 + crop > photo.shape[1]:
        raise ValueError(f"the blur of a {crop}² crop at ({top}, {left}) reads outside the photograph")
    window = photo[top + y0 : top + y0 + rows - 1 + crop, left + x0 : left + x0 + cols - 1 + crop]
    channels = torch.from_numpy(np.ascontiguousarray(window.transpose(2, 0, 1), dtype=np.float64))[:, None]
    blurred = F.conv2d(channels, torch.from_numpy(kernel)[None, None])[:, 0].numpy().transpose(1, 2, 0)
    to_uint8 = lambda image: np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)  # noqa: E731
    return to_uint8(blurred), to_uint8(photo[top : top + crop, left : left + crop])


class ValCrops:
    """Fixed places in the val photograph with fixed unit-speed paths; `at(speed)` blurs them at that speed.

    A place is a fraction of the room the photograph leaves around a crop, so a faster shake, which needs a
    wider margin, moves the crops by a few pixels instead of off the photograph.
    """

    def __init__(self, photo: np.ndarray, shake: str, count: int, size: int, seed: int = 1000) -> None:
        rng = np.random.default_rng(seed)
        self.photo, self.size = photo, size
        self.places = [(rng.random(2), unit_path(rng, shake)) for _ in range(count)]
        self.fastest = (min(photo.shape[:2]) - size - 6) / 2 / max(np.abs(path).max() for _, path in self.places)

    def at(self, speed: float) -> list[tuple[np.ndarray, np.ndarray]]:
        margin = max(reach(speed * path) for _, path in self.places)
        return [blurred_crop(self.photo, *random_corner(unit, self.photo, self.size, margin), self.size, speed * path)
                for unit, path in self.places]


def mean_input_psnr(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    return float(np.mean([psnr(blurred / 255, sharp / 255) for blurred, sharp in pairs]))


def calibrate_speed(val: ValCrops, input_psnr: float, iterations: int = 16) -> float:
    """The speed at which the val crops' mean input PSNR is `input_psnr` (bisection: PSNR falls as speed rises).

    It searches up to the fastest speed at which the val photograph still has room for the crops' margin.
    """
    low, high = SLOWEST, val.fastest
    mean_psnr = lambda speed: mean_input_psnr(val.at(speed))  # noqa: E731
    if not mean_psnr(high) <= input_psnr <= mean_psnr(low):
        raise SystemExit(f"--input-psnr {input_psnr} dB is out of reach: speeds {low}–{high:.2f} px per sub-frame "
                         f"give {mean_psnr(high):.1f}–{mean_psnr(low):.1f} dB on these crops")
    for _ in range(iterations):
        middle = math.sqrt(low * high)
        low, high = (middle, high) if mean_psnr(middle) > input_psnr else (low, middle)
    return math.sqrt(low * high)


def gain_on(net, pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean PSNR gain of `net` (eval mode) over the blurred input on `pairs`, restored in batches of 8."""
    import torch

    gains = []
    with torch.no_grad():
        for start in range(0, len(pairs), 8):
            blurred, sharp = (np.stack(a) for a in zip(*pairs[start : start + 8]))
            restored = net(torch.from_numpy(blurred).permute(0, 3, 1, 2).float() / 255).permute(0, 2, 3, 1).double()
            gains += [psnr(r, s / 255) - psnr(b / 255, s / 255) for r, b, s in zip(restored.numpy(), blurred, sharp)]
    return float(np.mean(gains))


def sample_photographs(split: Path, photos_dir: Path, scale: float) -> tuple[list[np.ndarray], np.ndarray]:
    """(train photographs less the val sequence's, the val sequence's photograph), float RGB resized by `scale`."""
    from imrestore.acquire.sample import GoproSampleConfig, photo_sizes, plan_gopro_sample

    table = pd.read_csv(split)
    val_sequences = set(table.loc[table["subset"] == "val", "sequence"])
    if not val_sequences:
        raise SystemExit(f"{split}: expected a val sequence to measure on, found none (split.gopro.val_fraction)")
    plans = [p for p in plan_gopro_sample(photo_sizes(photos_dir), GoproSampleConfig()) if p.split == "train"]
    val_photos = sorted({p.photo for p in plans if p.name in val_sequences})
    train_photos = sorted({p.photo for p in plans} - set(val_photos))

    def load(name: str) -> np.ndarray:
        with Image.open(photos_dir / name) as image:
            image = image.convert("RGB")
            size = (round(image.width * scale), round(image.height * scale))
            return np.asarray(image.resize(size, Image.Resampling.LANCZOS), dtype=np.float32) / 255

    return [load(name) for name in train_photos], load(val_photos[0])


def main() -> None:
    from imrestore.models.network import ARCHITECTURES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", type=Path, default=Path("build/splits/gopro.csv"), help="names the val sequence")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.6, 1.5],
                        help="factors the photographs are resized by (default 0.6 1.5)")
    parser.add_argument("--shakes", nargs="+", choices=SHAKES, default=["tremor"], help="camera paths (default tremor)")
    parser.add_argument("--input-psnr", type=float, default=26.0, help="the val crops' input PSNR every setting is "
                        "calibrated to (default 26 dB: the sample's test frames read 24.9, GoPro's about 25.6)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--arch", choices=ARCHITECTURES, default="nafnet")
    parser.add_argument("--val-crops", type=int, default=48)
    parser.add_argument("--val-size", type=int, default=96)
    parser.add_argument("--smoke", action="store_true", help="3 steps, 4 val crops: checks the script")
    parser.add_argument("--json", type=Path, default=None, help=f"default {RESULTS}/deblur_synthesis.json")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.eval_every, args.val_crops = 3, 2, 4
    console, start = Console(), time.perf_counter()
    results = {"what": "val PSNR gain (dB) over the blurred input while training on blur made afresh, per setting of "
                       "the deblur sample's synthesis, every setting calibrated to the same input PSNR",
               "params": {key: value for key, value in vars(args).items() if key not in ("json", "split")},
               "settings": [], "machine": machine_facts()}
    for scale in args.scales:
        train_photos, val_photo = sample_photographs(args.split, Path("data/sample_photos"), scale)
        for shake in args.shakes:
            val = ValCrops(val_photo, shake, args.val_crops, args.val_size)
            speed = calibrate_speed(val, args.input_psnr)
            val_pairs = val.at(speed)
            setting = {"scale": scale, "shake": shake, "speed_px": speed,
                       "input_psnr": mean_input_psnr(val_pairs),
                       "mean_path_px": float(np.mean([np.linalg.norm(np.diff(speed * path, axis=0), axis=1).sum()
                                                      for _, path in val.places])),
                       "curves": {}}

            def blur(rng, photo, crop, shake=shake, speed=speed):
                path = speed * unit_path(rng, shake)
                return blurred_crop(photo, *random_corner(rng.random(2), photo, crop, reach(path)), crop, path)

            for seed in args.seeds:
                curve = LearningCurve()

                def measure(step: int, net, curve: LearningCurve = curve, seed: int = seed) -> None:
                    point = curve.add(step, "gain", lambda: gain_on(net, val_pairs))
                    console.print(f"scale {scale}, {shake}, seed {seed}, step {step}: val {point['gain']:+.3f} dB")

                net = train_on_the_fly(args.steps, train_photos, seed, arch=args.arch, eval_every=args.eval_every,
                                       on_eval=measure, blur=blur)
                measure(args.steps, net)
                setting["curves"][str(seed)] = curve.points
            finals = [curve[-1]["gain"] for curve in setting["curves"].values()]
            setting["final_gain"] = float(np.mean(finals))
            setting["final_gain_std"] = float(np.std(finals, ddof=1)) if len(finals) > 1 else None
            # The curve's second half, averaged: steadier than its last point, and no maximum picked from noise.
            setting["late_gain"] = float(np.mean([p["gain"] for c in setting["curves"].values() for p in c
                                                  if p["step"] > args.steps / 2]))
            results["settings"].append(setting)
    results["seconds"] = time.perf_counter() - start
    table = new_table(f"{args.arch}, {args.steps} steps of 4 × 64², seeds {args.seeds}: val gain over an input of "
                      f"{args.input_psnr:g} dB", ("scale", "shake", "speed px/sub-frame", "path px", "final gain",
                                                  "mean gain, 2nd half"), left=("shake",))
    for row in results["settings"]:
        spread = f" ± {row['final_gain_std']:.2f}" if row["final_gain_std"] is not None else ""
        table.add_row(f"{row['scale']:g}", row["shake"], f"{row['speed_px']:.2f}", f"{row['mean_path_px']:.1f}",
                      f"{row['final_gain']:+.2f}{spread}", f"{row['late_gain']:+.2f}")
    console.print(table)
    write_json(results, args.json or (None if args.smoke else RESULTS / "deblur_synthesis.json"), console)


if __name__ == "__main__":
    main()
