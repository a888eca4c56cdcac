"""Test PSNR against training time: is the params.yaml budget on the flat part of the curve or still climbing?

Trains `--task` once with the pipeline's own `imrestore.training.train` (params.yaml as it is: the default
preset, on the pipeline's patch cache build/patches/<dataset>/, checkpoints and weights in a temporary folder)
and, every `--every-seconds` of training, restores the held-out test images (build/splits/<dataset>.csv) at
full resolution with the network in eval mode -- the same tiled inference, uint8 quantisation and metrics as
`imrestore.evaluation.evaluate.evaluate` -- then puts it back in training mode. Training seconds run from the start of
the fit loop and include what `train` itself spends (data loading, its validation and checkpoints); the time
of these test evaluations is excluded. The first point is the untrained network, the last the final one.

This benchmark looks at the test split only to draw the curve, never to choose settings: choose budgets and
hyperparameters on the validation curves (dvclive/<task>/), and read this one to see how far they are from
converged.

The curve is drawn with a horizontal line at the degraded input's PSNR (on the same images) and one at the
best classical baseline from metrics/<task>.json when that file exists (it may cover more test images than a
run with evaluate.max_images; the JSON records both counts).

    python benchmarks/training_curve.py --task denoise --every-seconds 20
    python benchmarks/training_curve.py --task deblur
    python benchmarks/training_curve.py --smoke          # 2 steps, 1 image, a point every second

Writes <out>/training_curve_<task>.json and .png (their fields: benchmarks/README.md).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from rich.console import Console

from common import (add_run_arguments, argument_parser, machine_facts,  # first: puts src/ on sys.path
                    new_table, output_dir, pipeline_inputs, read_json, with_overrides, write_json)

import imrestore.training as training
from imrestore.data.manifest import load_rgb8
from imrestore.evaluation.evaluate import EvaluateSettings, select_test_pairs
from imrestore.evaluation.inference import restore_images
from imrestore.evaluation.metrics import hwc_to_tensor, pair_metrics, quantize
from imrestore.params import load_params

NOTE = "This benchmark looks at the test split only to draw the curve, never to choose settings."
SMOKE = {"train.max_steps": 2, "evaluate.max_images": 1}
SMOKE_EVERY_SECONDS = 1.0


class HeldOutImages:
    """The test pairs as uint8 tensors (decoded once), scored the way `evaluate` scores them."""

    def __init__(self, params: dict, task: str, split_csv: Path) -> None:
        self.settings = EvaluateSettings.for_task(params, task)
        pairs = select_test_pairs(split_csv, self.settings.max_images)
        self.pairs = [tuple(hwc_to_tensor(load_rgb8(Path(path))) for path in (row.input_path, row.target_path))
                      for row in pairs.itertuples()]

    def score(self, net: torch.nn.Module | None) -> dict[str, float]:
        """Mean test PSNR and SSIM of `net` in eval mode (None: of the degraded input); `net`'s mode is restored."""
        training_mode = net.training if net is not None else False
        rows = []
        try:
            if net is not None:
                net.eval()
                device = next(net.parameters()).device
            for degraded, target in self.pairs:
                output = degraded
                if net is not None:
                    restored = restore_images(net, degraded[None].to(device).float() / 255, self.settings.inference)
                    output = quantize(restored)[0].cpu()
                rows.append(pair_metrics(output, target, self.settings.crop_border))
        finally:
            if net is not None:
                net.train(training_mode)
        return {name: sum(row[name] for row in rows) / len(rows) for name in ("psnr", "ssim")}


class CurveRecorder(Callback):
    """Scores the test set at step 0, then whenever `every_seconds` more of training have passed, and at the end.

    The training clock stops while the test set is scored."""

    def __init__(self, test_set: HeldOutImages, every_seconds: float, console: Console) -> None:
        self.test_set, self.every_seconds, self.console = test_set, every_seconds, console
        self.points: list[dict] = []
        self.trained = 0.0  # training seconds so far, scoring excluded
        self.resumed_at = 0.0

    def record(self, module) -> None:
        scores = self.test_set.score(module.net)
        self.points.append({"training_seconds": self.trained, "step": module.global_step,
                            "test_psnr": scores["psnr"], "test_ssim": scores["ssim"]})
        self.console.print(f"step {module.global_step:>6}  {self.trained:8.1f} s  test PSNR {scores['psnr']:.3f} dB")

    def on_train_start(self, trainer, module) -> None:
        self.record(module)
        self.resumed_at = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_index) -> None:
        self.trained += time.perf_counter() - self.resumed_at
        if self.trained - self.points[-1]["training_seconds"] >= self.every_seconds:
            self.record(module)
        self.resumed_at = time.perf_counter()

    def on_train_end(self, trainer, module) -> None:
        self.trained += time.perf_counter() - self.resumed_at
        if self.points[-1]["step"] != module.global_step:
            self.record(module)


def best_baseline(metrics_json: Path) -> dict | None:
    """The classical baseline with the highest test PSNR in an evaluate output, or None without one."""
    metrics = read_json(metrics_json) or {}
    baselines = metrics.get("baselines") or {}
    if not baselines:
        return None
    name = max(baselines, key=lambda key: baselines[key]["psnr"])
    return {"name": name, "psnr": baselines[name]["psnr"], "n_images": metrics.get("n_images"),
            "source": str(metrics_json)}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = results["points"]
    figure, axes = plt.subplots(figsize=(7, 4.2))
    axes.plot([p["training_seconds"] for p in points], [p["test_psnr"] for p in points], "o-", label="network (test)")
    axes.axhline(results["input_psnr"], color="gray", linestyle="--", label="degraded input")
    baseline = results["best_baseline"]
    if baseline is not None:
        axes.axhline(baseline["psnr"], color="tab:red", linestyle=":",
                     label=f"best baseline: {baseline['name']} ({baseline['n_images']} images)")
    axes.set_xlabel(f"training seconds on {results['device']} (test evaluations excluded)")
    axes.set_ylabel("test PSNR (dB)")
    count = results["n_images"]
    axes.set_title(f"{results['task']} ({results['data']} data, {count} test image{'s' if count != 1 else ''})")
    axes.legend(loc="lower right", fontsize=8)
    figure.text(0.01, 0.01, NOTE, fontsize=7, color="dimgray")
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__, json_results=False)
    parser.add_argument("--task", choices=list(training.TASKS), default="denoise", help="default denoise")
    parser.add_argument("--every-seconds", type=float, default=None,
                        help="training seconds between test evaluations "
                             f"(default 20; --smoke: {SMOKE_EVERY_SECONDS:g})")
    parser.add_argument("--metrics", type=Path, default=Path("metrics"),
                        help="folder of the pipeline's metrics/<task>.json, for the best baseline (default metrics)")
    add_run_arguments(parser, "2 steps, 1 test image, a point every second: checks the script runs")
    args = parser.parse_args(argv)
    every = args.every_seconds if args.every_seconds is not None else (SMOKE_EVERY_SECONDS if args.smoke else 20.0)
    dataset = training.TASKS[args.task]
    cache, split = pipeline_inputs(args.build, dataset)
    out = output_dir(args.out, args.smoke)
    params = with_overrides(load_params(args.params), SMOKE if args.smoke else {})

    console = Console()
    console.print(NOTE)
    test_set = HeldOutImages(params, args.task, split)
    recorder = CurveRecorder(test_set, every, console)
    with tempfile.TemporaryDirectory(prefix=f"training-curve-{args.task}-") as tmp:
        module = training.train(training.TrainConfig.from_params(params, args.task), cache_dir=cache,
                                checkpoint_dir=Path(tmp) / "checkpoints", model_dir=Path(tmp) / "model", live_dir=None,
                                callbacks=[recorder])
    results = {
        "task": args.task, "dataset": dataset, "data": test_set.settings.data, "note": NOTE,
        "every_seconds": every, "device": module.device.type, "n_images": len(test_set.pairs),
        "max_steps": module.trainer.max_steps,
        "points": recorder.points,
        "input_psnr": test_set.score(None)["psnr"],
        "best_baseline": best_baseline(args.metrics / f"{args.task}.json"),
        "params": {"train": params.get("train", {}), "model": params.get("model", {})},
        "machine": machine_facts(module.device),
    }

    table = new_table(f"{args.task}: test PSNR during training ({results['n_images']} test images). {NOTE}",
                      ("training s", "step", "test PSNR", "test SSIM"))
    for point in results["points"]:
        table.add_row(f"{point['training_seconds']:.1f}", str(point["step"]), f"{point['test_psnr']:.3f}",
                      f"{point['test_ssim']:.4f}")
    console.print(table)
    baseline = results["best_baseline"]
    described = (f"{baseline['name']} {baseline['psnr']:.3f} dB ({baseline['n_images']} images, {baseline['source']})"
                 if baseline else "none (no metrics file with baselines)")
    console.print(f"degraded input: {results['input_psnr']:.3f} dB; best baseline: {described}")
    write_json(results, out / f"training_curve_{args.task}.json", console)
    plot(results, out / f"training_curve_{args.task}.png")
    console.print(f"wrote {out / f'training_curve_{args.task}.png'}")


if __name__ == "__main__":
    main()
