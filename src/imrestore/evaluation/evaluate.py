"""evaluate@<task>: the trained network on the full-resolution test split, beside the degraded input and
classical baselines, into one metrics JSON, a per-image table and image comparisons.

    metrics/<task>.json               psnr, ssim (+ variants) of the network, the input, each baseline and any
                                      standard benchmark found; n_images, parameter count, throughput
    metrics/<task>/per_image.csv      name, psnr, ssim, input_psnr (a DVC plot)
    metrics/<task>/comparisons/*.png  input | restored | ground truth, with the worst-degraded crop enlarged

Every number is measured by `imrestore.evaluation.metrics` on uint8 images (the standard protocol). The test split is
GoPro's official test set (its 1111 frames on real data) and SIDD's held-out 20%. When the SIDD validation
benchmark's .mat files lie under `evaluate.benchmarks`, its 1280 blocks are evaluated as well.

Checkpoints trained elsewhere (NAFNet's release files, say) that lie in `evaluate.published`/<task>/ are
evaluated on the same images by the same code, into `published` in the same metrics JSON: the paper table
shows them beside the trained models (README, "Published checkpoints").
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw

from imrestore import atomic
from imrestore.data.layouts import TASKS
from imrestore.data.manifest import default_workers, load_rgb8, read_manifest
from imrestore.errors import ImrestoreError
from imrestore.evaluation.baselines import baseline_names, run_baseline
from imrestore.evaluation.inference import (DEVICE, InferenceConfig, prepare_network, resolve_device,
                                            restore_images)
from imrestore.evaluation.metrics import METRIC_NAMES, hwc_to_tensor, image_metrics, pair_metrics, quantize
from imrestore.evaluation.testsets import find_sidd_validation, load_sidd_validation, sidd_benchmark_folder
from imrestore.models.network import describe_network
from imrestore.models.weights import PUBLISHED_SUFFIXES, load_network, load_published
from imrestore.params import TEXT, Rule, Section, choice, either, given, inline, integer, optional, param, section
from imrestore.progress import progress_bar

PANEL_WIDTH = 480  # comparison panels are downscaled to this width: a page of them stays a few MB
BLOCK_BATCH = 16  # SIDD validation blocks (256²) per forward pass


FOLDER = either(choice(None), TEXT)
BASELINE_LISTS = Rule("a mapping of each task to a list of baseline names",
                      lambda v: isinstance(v, Mapping) and set(v) <= set(TASKS)
                      and all(n is None or isinstance(n, (str, list, tuple)) for n in v.values()),
                      lambda v: {task: (n,) if isinstance(n, str) else tuple(n or ()) for task, n in v.items()})


@dataclass(frozen=True)
class EvaluateSettings(Section):
    """The `evaluate` section, for one task (`task`, and `data`: whether the dataset is the sample or real)."""

    SECTION = "evaluate"

    task: str = given()
    data: str = given("sample")  # "sample" or "real": recorded in the metrics, so a sample number is labelled one
    inference: InferenceConfig = inline(InferenceConfig)
    baselines: dict[str, tuple[str, ...]] = param({}, BASELINE_LISTS)  # task → names
    crop_border: int = param(0, integer(minimum=0))
    comparisons: int = param(3, integer(minimum=0))  # input | restored | ground truth panels, as DVC image plots
    max_images: int | None = param(None, optional(integer(minimum=1)))  # None: every test image
    device: str = param("auto", DEVICE)
    # One folder per dataset below it (testsets.BENCHMARK_READMES); None: score no benchmark (callers outside
    # the pipeline: dvc.yaml depends on evaluate.benchmarks/<dataset>, so params.yaml always names a folder).
    benchmarks: str | None = param("data/benchmarks", FOLDER)
    published: str | None = param("data/checkpoints", FOLDER)  # <task>/*.pth below it are evaluated too

    @classmethod
    def for_task(cls, params: dict[str, Any], task: str) -> EvaluateSettings:
        """From all of params.yaml: `evaluate`, and `download.<dataset>.source`, which says whether the numbers
        are sample numbers (dvc.yaml lists both as evaluate@'s params)."""
        if task not in TASKS:
            raise ImrestoreError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
        source = section(params, f"download.{TASKS[task]}.source")
        return cls.from_params(section(params, "evaluate"), task=task, data="sample" if source == "sample" else "real")

    @classmethod
    def check_consistency(cls, values: dict[str, Any], fail: Callable[[str, str], None]) -> None:
        if values["task"] not in TASKS:
            raise ImrestoreError(f"unknown task {values['task']!r}: expected one of {', '.join(TASKS)}")
        if values["data"] not in ("sample", "real"):
            raise ImrestoreError(f"evaluate: data must be 'sample' or 'real', found {values['data']!r}")
        for task, names in values["baselines"].items():
            available = baseline_names(task)
            if any(name not in available for name in names) or len(set(names)) < len(names):
                fail("baselines", f"names from {', '.join(available)} for {task}, each once")

    @property
    def task_baselines(self) -> tuple[str, ...]:
        """The classical methods this task is compared with (the degraded input is always reported)."""
        return tuple(name for name in self.baselines.get(self.task, ()) if name != "identity")

    def folder(self, key: str) -> Path | None:
        value = getattr(self, key)
        return None if value is None else Path(value)


def select_test_pairs(split_csv: Path, max_images: int | None = None) -> pd.DataFrame:
    """The test subset of a split table, in pair_id order; `max_images` picks that many evenly spaced."""
    table = read_manifest(split_csv)
    test = table[table["subset"] == "test"].sort_values("pair_id").reset_index(drop=True)
    if test.empty:
        raise ImrestoreError(f"{split_csv} has no test pairs; expected the split stage to assign some")
    if max_images is not None and max_images < len(test):
        test = test.iloc[np.linspace(0, len(test) - 1, max_images).round().astype(int)].reset_index(drop=True)
    return test


def _mean(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Each metric's mean over the images. An image identical to its target has a PSNR of +inf (metrics.py): it
    is counted as `identical_images` and left out of the PSNR means, which it would make inf (and the metrics
    JSON invalid: JSON has no infinity). A metric with no finite value at all is null."""
    means: dict[str, Any] = {}
    for name in METRIC_NAMES:
        values = np.array([row[name] for row in rows], dtype=np.float64)
        finite = values[np.isfinite(values)]
        means[name] = float(finite.mean()) if finite.size else None
    identical = sum(not math.isfinite(row["psnr"]) for row in rows)
    return {**means, "identical_images": identical} if identical else means


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Restorer:
    """The network on its device, timed: seconds spent restoring and megapixels restored."""

    def __init__(self, net: torch.nn.Module, config: InferenceConfig, device: torch.device) -> None:
        self.net, self.config, self.device = prepare_network(net, device), config, device
        self.seconds = 0.0
        self.megapixels = 0.0

    def __call__(self, images_u8: torch.Tensor) -> torch.Tensor:
        """uint8 N×3×H×W (CPU) → restored uint8 N×3×H×W (CPU)."""
        batch = images_u8.to(self.device, non_blocking=True).float() / 255
        _synchronize(self.device)
        start = time.perf_counter()
        restored = quantize(restore_images(self.net, batch, self.config))
        _synchronize(self.device)
        self.seconds += time.perf_counter() - start
        self.megapixels += images_u8.shape[0] * images_u8.shape[-2] * images_u8.shape[-1] / 1e6
        return restored.cpu()


def worst_crop(degraded: np.ndarray, target: np.ndarray) -> tuple[int, int, int]:
    """(y, x, size) of the square, a quarter of the short side, where the input differs most from the truth."""
    size = max(8, min(degraded.shape[:2]) // 4)
    error = np.abs(degraded.astype(np.float32) - target.astype(np.float32)).mean(axis=2)
    # Box sums of the error over every size×size window, from an integral image.
    integral = np.pad(error.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x), size


def comparison_image(degraded: np.ndarray, restored: np.ndarray, target: np.ndarray,
                     labels: tuple[str, str, str]) -> Image.Image:
    """Three panels side by side, and under each the same crop enlarged to the panel's width."""
    y, x, size = worst_crop(degraded, target)
    height, width = degraded.shape[:2]
    scale = min(1.0, PANEL_WIDTH / width)
    panel_w, panel_h = max(1, round(width * scale)), max(1, round(height * scale))
    caption = 18
    canvas = Image.new("RGB", (3 * panel_w, caption + panel_h + panel_w), "white")
    draw = ImageDraw.Draw(canvas)
    for column, (image, label) in enumerate(zip((degraded, restored, target), labels)):
        left = column * panel_w
        full = Image.fromarray(image).resize((panel_w, panel_h), Image.Resampling.LANCZOS)
        canvas.paste(full, (left, caption))
        crop = Image.fromarray(image[y:y + size, x:x + size]).resize((panel_w, panel_w), Image.Resampling.NEAREST)
        canvas.paste(crop, (left, caption + panel_h))
        draw.text((left + 4, 3), label, fill="black")
        box = [left + x * scale, caption + y * scale, left + (x + size) * scale, caption + (y + size) * scale]
        draw.rectangle(box, outline="red", width=2)  # where the enlarged crop comes from
    return canvas


def _baseline_metrics(task: str, name: str, input_path: str, target_path: str, crop_border: int) -> dict:
    """One baseline on one pair, in a worker process (scikit-image's restorers are single-threaded)."""
    torch.set_num_threads(1)
    degraded, target = load_rgb8(Path(input_path)), load_rgb8(Path(target_path))
    output = run_baseline(task, name, degraded)
    return pair_metrics(hwc_to_tensor(output), hwc_to_tensor(target), crop_border)


def evaluate_baselines(task: str, names: tuple[str, ...], pairs: pd.DataFrame, crop_border: int,
                       progress: bool = True) -> dict[str, dict[str, float]]:
    names = tuple(name for name in names if name != "identity")  # the identity is the `input` entry already
    if not names:
        return {}
    jobs = [(name, row.input_path, row.target_path) for name in names for row in pairs.itertuples()]
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    context = multiprocessing.get_context("spawn")  # no fork of a process that already runs torch threads
    with concurrent.futures.ProcessPoolExecutor(default_workers(), mp_context=context) as pool, \
            progress_bar(f"{task} baselines", total=len(jobs), unit="images", enabled=progress) as advance:
        futures = {pool.submit(_baseline_metrics, task, name, inp, tgt, crop_border): name for name, inp, tgt in jobs}
        for future in concurrent.futures.as_completed(futures):
            results[futures[future]].append(future.result())
            advance(1)
    return {name: _mean(rows) for name, rows in results.items()}


def evaluate_sidd_validation(restorer: Restorer, folder: Path, crop_border: int, progress: bool = True) -> dict:
    """All blocks of the SIDD validation benchmark (when its two .mat files are under `folder`)."""
    files = find_sidd_validation(folder)
    if files is None:
        return {}
    benchmark = load_sidd_validation(*files)
    ours, inputs = [], []
    blocks = list(benchmark.blocks())
    with progress_bar("SIDD validation blocks", total=len(blocks), unit="blocks", enabled=progress) as advance:
        for start in range(0, len(blocks), BLOCK_BATCH):
            chunk = blocks[start:start + BLOCK_BATCH]
            noisy = torch.stack([hwc_to_tensor(block) for _, block, _ in chunk])
            clean = torch.stack([hwc_to_tensor(block) for _, _, block in chunk])
            restored = restorer(noisy)
            for metrics, pred in ((ours, restored), (inputs, noisy)):
                batch = image_metrics(pred, clean, crop_border)
                metrics += [{name: float(batch[name][i]) for name in METRIC_NAMES} for i in range(len(chunk))]
            advance(len(chunk))
    return {"sidd_validation": {"n_images": len(blocks), "files": [str(path) for path in files],
                                **_mean(ours), "input": _mean(inputs)}}


def published_checkpoints(folder: Path | None) -> dict[str, Path]:
    """{name: file} of the checkpoints in `folder` (the file names without suffix); README files are notes."""
    if folder is None or not Path(folder).is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(Path(folder).iterdir()):
        if path.name.lower().startswith("readme"):
            continue
        if path.suffix not in PUBLISHED_SUFFIXES or not path.is_file():
            what = "a folder" if path.is_dir() else f"a {path.suffix or 'suffix-less'} file"
            raise ImrestoreError(f"{path}: expected only checkpoint files ({', '.join(PUBLISHED_SUFFIXES)}) in "
                                 f"{folder}, found {what}")
        if path.stem in found:
            raise ImrestoreError(f"{path} and {found[path.stem]} would both be reported as {path.stem!r}; "
                                 "rename one")
        found[path.stem] = path
    return found


def evaluate(settings: EvaluateSettings, weights_dir: Path, split_csv: Path, metrics_json: Path, report_dir: Path,
             progress: bool = True) -> dict[str, Any]:
    """Evaluate the trained network of `settings.task`; write metrics_json and report_dir/{per_image.csv,
    comparisons/}."""
    task, dataset = settings.task, TASKS[settings.task]
    try:
        device = resolve_device(settings.device)
    except ImrestoreError as error:  # e.g. cuda on a machine without one: say which key asked for it
        raise ImrestoreError(f"params.yaml: evaluate.{error}") from None
    net = load_network(weights_dir)
    restorer = Restorer(net, settings.inference, device)
    published_folder = settings.folder("published")
    published_files = published_checkpoints(published_folder / task if published_folder is not None else None)
    published = {name: Restorer(load_published(path), settings.inference, device)
                 for name, path in published_files.items()}
    pairs = select_test_pairs(split_csv, settings.max_images)
    shown = set(np.linspace(0, len(pairs) - 1, min(settings.comparisons, len(pairs))).round().astype(int).tolist()
                if settings.comparisons else [])

    rows, ours, inputs = [], [], []
    theirs: dict[str, list[dict[str, float]]] = {name: [] for name in published}
    with atomic.atomic_dir(report_dir) as out:
        (out / "comparisons").mkdir()
        with progress_bar(f"evaluate {task}", total=len(pairs), unit="images", enabled=progress) as advance:
            for index, pair in pairs.iterrows():
                degraded, target = load_rgb8(Path(pair.input_path)), load_rgb8(Path(pair.target_path))
                if degraded.shape != target.shape:
                    raise ImrestoreError(f"{pair.input_path} is {degraded.shape} but its target {pair.target_path} "
                                         f"is {target.shape}; expected the same size")
                degraded_chw, target_chw = hwc_to_tensor(degraded), hwc_to_tensor(target)  # once: each may copy
                restored = restorer(degraded_chw[None])[0]
                ours.append(pair_metrics(restored, target_chw, settings.crop_border))
                for name, other in published.items():
                    theirs[name].append(pair_metrics(other(degraded_chw[None])[0], target_chw, settings.crop_border))
                inputs.append(pair_metrics(degraded_chw, target_chw, settings.crop_border))
                rows.append({"name": pair.pair_id, "psnr": ours[-1]["psnr"], "ssim": ours[-1]["ssim"],
                             "input_psnr": inputs[-1]["psnr"], "input_ssim": inputs[-1]["ssim"]})
                if index in shown:
                    labels = (f"input {inputs[-1]['psnr']:.2f} dB", f"restored {ours[-1]['psnr']:.2f} dB",
                              "ground truth")
                    image = comparison_image(degraded, restored.permute(1, 2, 0).numpy(), target, labels)
                    image.save(out / "comparisons" / f"{pair.pair_id.replace('/', '_')}.png", optimize=True)
                advance(1)
        pd.DataFrame(rows).to_csv(out / "per_image.csv", index=False, float_format="%.6f")
        test_seconds, test_megapixels = restorer.seconds, restorer.megapixels
        def benchmarks_of(scored: Restorer) -> dict:
            return (evaluate_sidd_validation(scored, sidd_benchmark_folder(settings.folder("benchmarks")),
                                             settings.crop_border, progress)
                    if task == "denoise" and settings.benchmarks is not None else {})

        benchmarks = benchmarks_of(restorer)
        baselines = evaluate_baselines(task, settings.task_baselines, pairs, settings.crop_border, progress)
        metrics = {
            "task": task, "dataset": dataset, "data": settings.data,
            "split": "test", "n_images": len(pairs), "crop_border": settings.crop_border,
            **_mean(ours),
            "input": _mean(inputs),
            "baselines": baselines,
            "benchmarks": benchmarks,
            "model": describe_network(net),
            "published": {name: {**_mean(theirs[name]), "model": describe_network(other.net),
                                 "benchmarks": benchmarks_of(other), "file": str(published_files[name])}
                          for name, other in published.items()},
            "inference": {"device": _device_name(device), "megapixels_per_s": test_megapixels / test_seconds,
                          "seconds_per_image": test_seconds / len(pairs), "tile": settings.inference.tile,
                          "overlap": settings.inference.overlap, "self_ensemble": settings.inference.self_ensemble},
        }
        atomic.write_json(metrics_json, metrics)
    return metrics
