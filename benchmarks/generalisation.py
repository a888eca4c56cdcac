"""Do the sample-trained networks restore photographs that are in no sample? The trained models on unseen photos.

The embedded sample is synthesised from six scikit-image photographs (`imrestore.acquire.sample.SAMPLE_PHOTOS`), and
the test split holds frames and crops of those same six. This benchmark takes photographs that are in no sample
(`UNSEEN_PHOTOS`: scikit-image's motorcycle_left, camera, brick and gravel, and matplotlib's grace_hopper; the
greyscale ones are stacked to RGB), degrades them with the sample's own synthesis and settings, and scores the
trained networks in models/<task>/ and the evaluate stage's classical baselines on them:

- deblur: per photo one GoPro-like sequence, planned by `sample.plan_gopro_sample` and rendered by
  `sample.render_gopro_frame` with the params.yaml `download.gopro.sample` config (frame size, sub-frames,
  shake, trajectory bounds); its first `--frames` frames give (blur, sharp) pairs, the input folder being
  `validate.gopro.input_folder` as in the pipeline;
- denoise: non-overlapping crops of the `download.sidd.sample` size (256×256), planned by
  `sample.plan_sidd_sample` over the unseen photos (cameras, ISOs, illuminants and L/N/H brightness drawn as
  the sample draws them) and rendered by `sample.render_sidd_instance` (`degradations.sidd_pair`).

Every photo's plan is seeded from `--seed` (the sample's own seed is not used: these are other draws), so the
images and every number except `timing` are the same from run to run. Restoration is the evaluate stage's:
`evaluation.Restorer` with the `evaluate` section's inference settings (tile 256, overlap 32), metrics by
`imrestore.evaluation.metrics.image_metrics` on uint8 images with `evaluate.crop_border`.

    python benchmarks/generalisation.py                        # both tasks, models/<task>/
    python benchmarks/generalisation.py --tasks denoise --save-images
    python benchmarks/generalisation.py --smoke --weights-root /tmp/tiny   # 1 photo, 1 frame / crop per task

Writes <out>/generalisation.json, its fields listed in benchmarks/README.md: metrics are
imrestore.evaluation.metrics.METRIC_NAMES, gains PSNR differences in dB. `sample_test_reference` is
metrics/<task>.json as the evaluate stage last wrote it (the same networks on the sample's own test split; null
unless --weights-root is models/): the gap between its gain and this one is the price of unseen content. The
baselines' constants were tuned on motorcycle_left/right (imrestore.evaluation.baselines), so on motorcycle_left
the baselines are not on unseen data.

On a CPU that other jobs share, pass --threads 1 (benchmarks/README.md says why). The renderers are the sample's
private ones (their photo caches cleared after use): the public `make_*_sample` functions render only the
sample's own photographs, and a copy of the renderers here could drift from the sample's.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.resources
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from common import (add_run_arguments, machine_facts, new_table, output_dir,  # first: puts src/ on sys.path
                    read_json, wide_console, write_json)

from imrestore.acquire import sample
from imrestore.acquire.sources import SourceConfig
from imrestore.data.layouts import TASKS
from imrestore.data.manifest import load_rgb8
from imrestore.data.validation import ValidateConfig
from imrestore.errors import ImrestoreError
from imrestore.evaluation.baselines import run_baseline
from imrestore.evaluation.evaluate import EvaluateSettings, Restorer
from imrestore.evaluation.inference import resolve_device
from imrestore.evaluation.metrics import METRIC_NAMES, hwc_to_tensor, pair_metrics
from imrestore.models.weights import load_network
from imrestore.params import load_params, section

SKIMAGE, MATPLOTLIB = "scikit-image", "matplotlib"
# file name → (package that ships it, credit). In this order; --smoke takes the first one found.
UNSEEN_PHOTOS: dict[str, tuple[str, str]] = {
    "motorcycle_left.png": (SKIMAGE, "Motorcycle, left view of a Middlebury 2014 stereo pair; Nesic, Westling, "
                                     "Wang, Kitajima, Krathwohl, Scharstein (Middlebury College)"),
    "grace_hopper.jpg": (MATPLOTLIB, "Rear Admiral Grace M. Hopper; U.S. Navy photograph, public domain"),
    "camera.png": (SKIMAGE, "Cameraman (greyscale); Lav Varshney; CC0"),
    "brick.png": (SKIMAGE, "Brick wall (greyscale texture); CC0Textures Bricks25; CC0"),
    "gravel.png": (SKIMAGE, "Gravel (greyscale texture); CC0Textures Gravel04; CC0"),
}
EXCLUDED = {
    "motorcycle_right.png": "the other view of the motorcycle_left stereo pair: the same scene, so not independent",
    "retina.jpg": "a medical fundus image, not a photograph of the kind either dataset holds",
}
DEFAULT_FRAMES = 3  # consecutive frames of each photo's GoPro-like sequence
DEFAULT_CROPS = 4  # SIDD-like crops per photo (a 512×512 photo holds 4 non-overlapping 256² crops)
TASK_CODE = {"deblur": 0xDEB1, "denoise": 0xDE05}


# --------------------------------------------------------------------------------------------- the photos


def locate(name: str, origin: str) -> Path | None:
    """The file inside the installed package, or None when that version does not ship it."""
    if origin == SKIMAGE:
        path = Path(str(importlib.resources.files("skimage.data") / name))
    else:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / name
    return path if path.is_file() else None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_unseen(names, paths: dict[str, Path] | None = None) -> None:
    """Refuse any photo that is in the sample, by name or (for the files given) by identical bytes."""
    overlap = sorted(set(names) & set(sample.SAMPLE_PHOTOS))
    if overlap:
        raise ValueError(f"{', '.join(overlap)} are sample photographs (imrestore.acquire.sample.SAMPLE_PHOTOS): "
                         "a generalisation benchmark must use photos outside the sample")
    if paths:
        source = importlib.resources.files("skimage.data")
        sample_hashes = {hashlib.sha256((source / name).read_bytes()).hexdigest(): name
                         for name in sample.SAMPLE_PHOTOS if (source / name).is_file()}
        for name, path in paths.items():
            twin = sample_hashes.get(_sha256(path))
            if twin is not None:
                raise ValueError(f"{path} has the same bytes as the sample photograph {twin}")


def find_photos(console: Console) -> tuple[dict[str, Path], dict[str, str]]:
    """(name → path of every unseen photo found, name → why it was skipped)."""
    found, skipped = {}, {}
    for name, (origin, _) in UNSEEN_PHOTOS.items():
        path = locate(name, origin)
        if path is None:
            skipped[name] = f"not shipped by the installed {origin}"
            console.print(f"note: skipping {name}: {skipped[name]}")
        else:
            found[name] = path
    return found, skipped


def _package_version(origin: str) -> str:
    import matplotlib
    import skimage

    return skimage.__version__ if origin == SKIMAGE else matplotlib.__version__


def photo_facts(name: str, path: Path, tasks: list[str]) -> dict:
    origin, credit = UNSEEN_PHOTOS[name]
    with Image.open(path) as image:
        size, mode = list(image.size), image.mode
    where = "skimage/data" if origin == SKIMAGE else "matplotlib/mpl-data/sample_data"
    return {"origin": f"{origin} {_package_version(origin)}: {where}/{name}", "path": str(path), "credit": credit,
            "size": size, "mode": mode, "rgb": "as stored" if mode == "RGB" else f"{mode} converted to RGB "
            "(greyscale stacked into 3 equal channels)", "sha256": _sha256(path), "tasks": tasks}


def _seed(seed: int, task: str, index: int) -> int:
    """A config seed for one photo's draws: independent of the sample's seed and of the other photos'."""
    return int(np.random.SeedSequence([seed, TASK_CODE[task], index]).generate_state(1)[0])


# --------------------------------------------------------------------------------------------- degraded pairs


def deblur_pairs(name: str, path: Path, index: int, cfg: sample.GoproSampleConfig, input_folder: str,
                 frames: int, seed: int) -> list[dict]:
    """The first `frames` (input, sharp) frames of one GoPro-like sequence of the photo, as the sample makes them.

    `plan_gopro_sample` plans sequences only for sample photos, so it is given every sample name with this
    photo's size: each plan then depends on the size alone (enlargement, centre, sub-frames, shake,
    trajectory seed), and the first one is re-labelled with this photo.
    """
    if frames > cfg.frames_per_sequence:
        raise ValueError(f"--frames {frames} > download.gopro.sample.frames_per_sequence {cfg.frames_per_sequence}")
    with Image.open(path) as image:
        size = image.size
    cfg = dataclasses.replace(cfg, seed=_seed(seed, "deblur", index), train_sequences=1, test_sequences=1)
    plan = sample.plan_gopro_sample({photo: size for photo in sample.SAMPLE_PHOTOS}, cfg)[0]
    plan = dataclasses.replace(plan, split="unseen", photo=name)
    pairs = []
    try:
        with tempfile.TemporaryDirectory(prefix="imrestore-generalisation-") as tmp:
            for folder in sample.GOPRO_FOLDERS:
                (Path(tmp) / folder).mkdir()
            for frame in range(frames):
                sample.render_gopro_frame(str(path), plan, frame, cfg, tmp)
                file_name = f"{plan.first_frame + frame:06d}.png"
                pairs.append({
                    "photo": name, "image": f"{Path(name).stem}/{plan.name}/{file_name}",
                    "conditions": {"plan": dataclasses.asdict(plan), "frame": frame, "config_seed": cfg.seed,
                                   "input_folder": input_folder},
                    "degraded": load_rgb8(Path(tmp) / input_folder / file_name),
                    "target": load_rgb8(Path(tmp) / "sharp" / file_name),
                })
    finally:
        sample.clear_photo_caches()
    return pairs


def crop_capacity(size: tuple[int, int], cfg: sample.SiddSampleConfig) -> int:
    """How many non-overlapping crops of the sample's size the photo holds (`sample._scene_boxes`' grid)."""
    return (size[0] // cfg.width) * (size[1] // cfg.height)


def denoise_pairs(paths: dict[str, Path], cfg: sample.SiddSampleConfig, crops: int, seed: int,
                  console: Console) -> list[dict]:
    """Up to `crops` (noisy, clean) crops per photo, planned and rendered as the SIDD-like sample's instances."""
    sizes = {}
    for name, path in paths.items():
        with Image.open(path) as image:
            sizes[name] = image.size
        if crop_capacity(sizes[name], cfg) == 0:
            console.print(f"note: skipping {name} for denoise: smaller than a {cfg.width}×{cfg.height} crop")
            del sizes[name]
    if not sizes:
        return []
    # Round-robin over the photos (sample._scene_boxes): this many scenes gives each photo min(crops, capacity).
    scenes = sum(min(crops, crop_capacity(size, cfg)) for size in sizes.values())
    cfg = dataclasses.replace(cfg, seed=_seed(seed, "denoise", 0), scenes=scenes, instances_per_scene=1)
    plans = sample.plan_sidd_sample(sizes, cfg)
    pairs = []
    try:
        with tempfile.TemporaryDirectory(prefix="imrestore-generalisation-") as tmp:
            for plan in plans:
                folder = Path(tmp) / plan.folder
                folder.mkdir()
                sample.render_sidd_instance(str(paths[plan.photo]), plan, str(folder))
                pairs.append({
                    "photo": plan.photo, "image": f"{Path(plan.photo).stem}/{plan.folder}",
                    "conditions": {"plan": dataclasses.asdict(plan), "config_seed": cfg.seed},
                    "degraded": load_rgb8(folder / sample.SIDD_NOISY_NAME),
                    "target": load_rgb8(folder / sample.SIDD_GT_NAME),
                })
    finally:
        sample.clear_photo_caches()
    order = list(sizes)
    return sorted(pairs, key=lambda pair: order.index(pair["photo"]))  # stable: crops of a photo stay in order


# --------------------------------------------------------------------------------------------- scoring


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    return {name: float(np.mean([row[name] for row in rows])) for name in METRIC_NAMES}


def with_gains(entry: dict) -> dict:
    """`entry` (metrics of "input", "network" and each of "baselines") with its best baseline (highest PSNR) and
    the network's PSNR gains over the input and over that baseline added."""
    baselines = entry["baselines"]
    best = max(baselines, key=lambda name: baselines[name]["psnr"]) if baselines else None
    entry["best_baseline"] = best
    entry["gain_db"] = entry["network"]["psnr"] - entry["input"]["psnr"]
    entry["gain_over_best_baseline_db"] = entry["network"]["psnr"] - baselines[best]["psnr"] if best else None
    return entry


def score(task: str, pairs: list[dict], restorer: Restorer, baselines: tuple[str, ...], crop_border: int,
          save_dir: Path | None) -> list[dict]:
    """One row per pair: the input, the network and every baseline against the target."""
    rows = []
    for pair in pairs:
        degraded, target = pair["degraded"], pair["target"]
        truth, given = hwc_to_tensor(target), hwc_to_tensor(degraded)
        restored = restorer(given[None])[0]
        row = with_gains({"photo": pair["photo"], "image": pair["image"], "conditions": pair["conditions"],
                          "input": pair_metrics(given, truth, crop_border),
                          "network": pair_metrics(restored, truth, crop_border),
                          "baselines": {name: pair_metrics(hwc_to_tensor(run_baseline(task, name, degraded)), truth,
                                                         crop_border) for name in baselines}})
        if save_dir is not None:
            stem = save_dir / task / row["image"].replace("/", "_").removesuffix(".png")
            stem.parent.mkdir(parents=True, exist_ok=True)
            for role, image in (("input", degraded), ("restored", restored.permute(1, 2, 0).numpy()),
                                ("target", target)):
                Image.fromarray(image).save(f"{stem}_{role}.png")
            row["files"] = {role: f"{stem}_{role}.png" for role in ("input", "restored", "target")}
        rows.append(row)
    return rows


def summarise(rows: list[dict], baselines: tuple[str, ...]) -> dict:
    """Means over `rows`: input, network, each baseline, the best baseline (highest mean PSNR) and the gains."""
    return with_gains({"n_images": len(rows), "input": mean_metrics([row["input"] for row in rows]),
                       "network": mean_metrics([row["network"] for row in rows]),
                       "baselines": {name: mean_metrics([row["baselines"][name] for row in rows])
                                     for name in baselines}})


def sample_test_reference(metrics_json: Path) -> dict | None:
    """The evaluate stage's numbers on the sample's test split, if it has written them."""
    metrics = read_json(metrics_json)
    if metrics is None:
        return None
    return {"source": str(metrics_json), "n_images": metrics.get("n_images"), "network_psnr": metrics["psnr"],
            "network_ssim": metrics["ssim"], "input_psnr": metrics["input"]["psnr"],
            "input_ssim": metrics["input"]["ssim"], "gain_db": metrics["psnr"] - metrics["input"]["psnr"]}


def weights_facts(weights_dir: Path) -> dict:
    config = json.loads((weights_dir / "config.json").read_text(encoding="utf-8"))
    return {"dir": str(weights_dir), "sha256": _sha256(weights_dir / "model.pt"), "model": config.get("model")}


# --------------------------------------------------------------------------------------------- output


def task_table(task: str, result: dict) -> Table:
    table = new_table(f"{task}: sample-trained network on photos in no sample ({result['mean']['n_images']} images)",
                      ("photo", "images", "input PSNR", "input SSIM", "network PSNR", "network SSIM", "best baseline",
                       "gain over input"), left=("photo", "best baseline"), no_wrap=True)

    def add(label: str, summary: dict, **style) -> None:
        best = summary["best_baseline"]
        best_text = f"{best} {summary['baselines'][best]['psnr']:.2f} dB" if best else "-"
        table.add_row(label, str(summary["n_images"]), f"{summary['input']['psnr']:.2f}",
                      f"{summary['input']['ssim']:.4f}", f"{summary['network']['psnr']:.2f}",
                      f"{summary['network']['ssim']:.4f}", best_text, f"{summary['gain_db']:+.2f} dB", **style)

    for photo, summary in result["per_photo"].items():
        add(photo, summary)
    add("mean", result["mean"], style="bold")
    reference = result["sample_test_reference"]
    if reference is not None:
        table.caption = (f"sample test split ({reference['source']}): input {reference['input_psnr']:.2f} dB, "
                         f"network {reference['network_psnr']:.2f} dB, gain {reference['gain_db']:+.2f} dB")
    return table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--weights-root", type=Path, default=Path("models"),
                        help="folder with <task>/model.pt + config.json (default models)")
    add_run_arguments(parser, "one photo per task, one frame / crop: checks that it runs (any weights)", build=False)
    parser.add_argument("--seed", type=int, default=0, help="seeds every photo's degradation (default 0)")
    parser.add_argument("--metrics-root", type=Path, default=Path("metrics"),
                        help="the evaluate stage's <task>.json, quoted as the sample test reference (default metrics)")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES,
                        help=f"deblur frames per photo ({DEFAULT_FRAMES})")
    parser.add_argument("--crops", type=int, default=DEFAULT_CROPS, help=f"denoise crops per photo ({DEFAULT_CROPS})")
    parser.add_argument("--device", default=None, help="torch device (default: params evaluate.device)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's; 1 on a CPU that other jobs share)")
    parser.add_argument("--save-images", action="store_true",
                        help="also write <out>/generalisation/<task>/<image>_{input,restored,target}.png")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.crops < 1:
        parser.error("--frames and --crops must be ≥ 1")
    if args.smoke:
        args.frames = args.crops = 1
    return args


def main(argv: list[str] | None = None, console: Console | None = None) -> dict:
    args = parse_args(argv)
    console = console or wide_console(132)
    if args.threads:
        torch.set_num_threads(args.threads)
    check_unseen(list(UNSEEN_PHOTOS))
    params = load_params(args.params)
    out = output_dir(args.out, args.smoke)
    nets = {}
    for task in args.tasks:  # before any work: weights that do not load are the likeliest failure
        weights = args.weights_root / task
        if not (weights / "model.pt").is_file():
            raise SystemExit(f"error: {weights}/model.pt is missing: run `make repro` first (the train stage writes "
                             "models/<task>/), or point --weights-root at a folder with <task>/model.pt + config.json")
        try:
            nets[task] = load_network(weights)
        except ImrestoreError as exc:
            raise SystemExit(f"error: {task}: {exc}") from None

    found, skipped = find_photos(console)
    if not found:
        raise SystemExit("error: none of the unseen photographs was found: " + "; ".join(
            f"{name}: {why}" for name, why in skipped.items()))
    check_unseen(list(found), found)
    gopro_cfg = SourceConfig.for_dataset("gopro", section(params, "download.gopro")).sample_config()
    sidd_cfg = SourceConfig.for_dataset("sidd", section(params, "download.sidd")).sample_config()
    input_folder = ValidateConfig.for_dataset("gopro", params.get("validate", {}).get("gopro")).input_folder
    chosen = dict(list(found.items())[:1]) if args.smoke else found
    indices = {name: list(UNSEEN_PHOTOS).index(name) for name in chosen}

    settings_of = {task: EvaluateSettings.for_task(params, task) for task in args.tasks}
    first = settings_of[args.tasks[0]]
    device = resolve_device(args.device or first.device)
    results = {"benchmark": "generalisation", "seed": args.seed, "smoke": args.smoke,
               "statement": (f"none of the photographs below is in the embedded sample: their names are not in "
                             f"imrestore.acquire.sample.SAMPLE_PHOTOS ({', '.join(sample.SAMPLE_PHOTOS)}) and no file has the "
                             "bytes of a sample photograph (checked at start)"),
               "sample_photos": list(sample.SAMPLE_PHOTOS), "photos": {}, "excluded": dict(EXCLUDED),
               "skipped": skipped,
               "params": {"gopro_sample": dataclasses.asdict(gopro_cfg), "sidd_sample": dataclasses.asdict(sidd_cfg),
                          "input_folder": input_folder, "inference": dataclasses.asdict(first.inference),
                          "crop_border": first.crop_border, "device": str(device),
                          "frames_per_photo": args.frames, "crops_per_photo": args.crops},
               "tasks": {}, "timing": {}}
    save_dir = out / "generalisation" if args.save_images else None
    # metrics/<task>.json describes the pipeline's networks: quoted only beside those same weights.
    pipeline_weights = args.weights_root.resolve() == Path("models").resolve()

    for task in args.tasks:
        settings = settings_of[task]
        baselines = settings.task_baselines
        with console.status(f"{task}: degrading {len(chosen)} photo(s)"):
            if task == "deblur":
                pairs = [pair for name, path in chosen.items()
                         for pair in deblur_pairs(name, path, indices[name], gopro_cfg, input_folder, args.frames,
                                                  args.seed)]
            else:
                pairs = denoise_pairs(chosen, sidd_cfg, args.crops, args.seed, console)
        if not pairs:
            console.print(f"note: no {task} images: skipping the task")
            continue
        weights = args.weights_root / task
        restorer = Restorer(nets[task], settings.inference, device)
        with console.status(f"{task}: restoring and scoring {len(pairs)} images"):
            rows = score(task, pairs, restorer, baselines, settings.crop_border, save_dir)
        photos = list(dict.fromkeys(row["photo"] for row in rows))
        result = {"weights": weights_facts(weights), "baselines": list(baselines), "rows": rows,
                  "per_photo": {photo: summarise([row for row in rows if row["photo"] == photo], baselines)
                                for photo in photos},
                  "mean": summarise(rows, baselines),
                  "sample_test_reference": (sample_test_reference(args.metrics_root / f"{task}.json")
                                            if pipeline_weights else None)}
        best = result["mean"]["best_baseline"]
        result["mean"]["network_beats_input"] = sum(row["gain_db"] > 0 for row in rows)
        result["mean"]["network_beats_best_baseline"] = (
            sum(row["network"]["psnr"] > row["baselines"][best]["psnr"] for row in rows) if best else None)
        results["tasks"][task] = result
        results["timing"][task] = {"restore_seconds": restorer.seconds, "megapixels": restorer.megapixels}
        for photo in photos:
            entry = results["photos"].setdefault(photo, photo_facts(photo, found[photo], []))
            entry["tasks"].append(task)
        console.print(task_table(task, result))

    results["machine"] = machine_facts(device)
    write_json(results, out / "generalisation.json", console)
    return results


if __name__ == "__main__":
    main()
