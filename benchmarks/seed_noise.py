"""How much of a test-PSNR difference is the seed: the real `train` + `evaluate` of each task, once per seed.

Each seed runs the pipeline's own training (`imrestore.training.train`) on the pipeline's patch cache
(build/patches/<dataset>/) at the params.yaml budget with only `train.seed` changed, then its own evaluation
(`imrestore.evaluation.evaluate.evaluate`) on the test split (build/splits/<dataset>.csv). Checkpoints, weights and
metrics go to temporary folders; the pipeline's outputs are not touched. The classical baselines, the SIDD
validation .mat benchmark and the comparison images are skipped: they do not depend on the seed.

The result is the seed-to-seed spread of the test PSNR and SSIM (sample standard deviation, ddof = 1), and the
network's gain over the degraded input in units of that spread (`gain_to_noise`): a difference between two
configurations smaller than about 2 std of one configuration across seeds is not evidence of anything.

    python benchmarks/seed_noise.py                          # seeds 0 1 2, both tasks: ~3x train+evaluate
    python benchmarks/seed_noise.py --seeds 0 1 2 3 4 --tasks denoise
    python benchmarks/seed_noise.py --smoke                  # 2 steps, 1 image, seeds 0 1: checks it runs
    python benchmarks/seed_noise.py --reuse-pipeline-run     # seed 0 is the committed metrics/: 2x, not 3x
    python benchmarks/seed_noise.py --tasks denoise --set train.ema_decay=0.99   # a candidate change, per seed

Beside the test PSNR it records each run's last validation PSNR (`val_psnr`): a candidate change is judged on
the validation split, so the test split is only reported, never tuned to.

Writes <out>/seed_noise.json (the PR report reads it; its fields: benchmarks/README.md).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

from rich.console import Console

from common import (REPO, add_run_arguments, argument_parser, machine_facts,  # first: puts src/ on sys.path
                    new_table, output_dir, pipeline_inputs, timed, with_overrides, write_json)

from imrestore.data.layouts import TASKS  # training's TASKS, without importing torch
from imrestore.params import load_params, parse_yaml

SMOKE = {"train.max_steps": 2, "evaluate.max_images": 1}
SMOKE_SEEDS = [0, 1]


def spread(values: list[float]) -> dict:
    """Values, mean and sample standard deviation (ddof = 1) across seeds."""
    return {"values": list(values), "mean": statistics.mean(values), "std": statistics.stdev(values)}


def task_summary(metrics: list[dict], train_seconds: list[float], val_psnr: list[float | None]) -> dict:
    """One task's entry of seed_noise.json from its per-seed `evaluate` results and last validation PSNRs."""
    if len(metrics) < 2:
        raise ValueError(f"a spread needs at least 2 seeds, found {len(metrics)}")
    inputs = {run["input"]["psnr"] for run in metrics}
    if max(inputs) - min(inputs) > 1e-9:  # the degraded input is the same images whatever the seed
        raise ValueError(f"the input PSNR differs between seeds ({sorted(inputs)}): not the same test images")
    psnr = spread([run["psnr"] for run in metrics])
    input_psnr = metrics[0]["input"]["psnr"]
    gain = psnr["mean"] - input_psnr
    return {
        "psnr": psnr,
        "ssim": spread([run["ssim"] for run in metrics]),
        "input_psnr": input_psnr,
        "gain_over_input": gain,
        "gain_to_noise": gain / psnr["std"] if psnr["std"] > 0 else None,
        "val_psnr": spread(val_psnr) if None not in val_psnr else None,  # None: a run had no val split
        "train_seconds": list(train_seconds),
    }


def run_params(params: dict, tasks: list[str], smoke: bool) -> dict:
    """params.yaml as every seed runs it: no baselines, benchmarks or comparisons (none depends on the seed)."""
    overrides = {f"evaluate.baselines.{task}": [] for task in tasks}
    overrides.update({"evaluate.benchmarks": None, "evaluate.comparisons": 0})
    return with_overrides(params, {**overrides, **(SMOKE if smoke else {})})


def train_and_evaluate(task: str, params: dict, cache: Path, split: Path) -> tuple[dict, float, float | None]:
    """The pipeline's train + evaluate of `task` in temporary folders: (metrics, seconds of train, the last
    validation PSNR)."""
    from imrestore.evaluation.evaluate import EvaluateSettings, evaluate
    from imrestore.training import TrainConfig, train

    with tempfile.TemporaryDirectory(prefix=f"seed-noise-{task}-") as tmp:
        tmp = Path(tmp)
        trained = []
        seconds = timed(lambda: trained.append(train(TrainConfig.from_params(params, task), cache_dir=cache,
                                                     checkpoint_dir=tmp / "checkpoints", model_dir=tmp / "model",
                                                     live_dir=None))).wall
        val = trained[0].trainer.callback_metrics.get("val/psnr")
        metrics = evaluate(EvaluateSettings.for_task(params, task), weights_dir=tmp / "model", split_csv=split,
                           metrics_json=tmp / "metrics.json", report_dir=tmp / "report", progress=True)
    return metrics, seconds, None if val is None else float(val)


def committed_val_psnr(task: str) -> float | None:
    """The last validation PSNR of the pipeline's own run (dvclive/<task>/metrics.json), if it has one."""
    live = REPO / "dvclive" / task / "metrics.json"
    return json.loads(live.read_text()).get("val", {}).get("psnr") if live.is_file() else None


def summary(seeds: list[int], params: dict, tasks: dict[str, dict]) -> dict:
    """The whole of seed_noise.json."""
    from imrestore.evaluation.evaluate import EvaluateSettings

    kinds = {EvaluateSettings.for_task(params, task).data for task in tasks}
    train_section = {key: value for key, value in params.get("train", {}).items() if key != "seed"}
    return {
        "seeds": list(seeds),
        "data": "sample" if kinds == {"sample"} else "real",
        "params": {"train": train_section, "model": params.get("model", {})},
        "tasks": tasks,
        "machine": machine_facts(),
    }


def print_table(results: dict, console: Console) -> None:
    table = new_table(f"test metrics across seeds {results['seeds']} ({results['data']} data; std: ddof = 1)",
                      ("task", "PSNR per seed", "PSNR mean ± std", "input PSNR", "gain", "gain / std",
                       "SSIM mean ± std", "val PSNR mean ± std", "train s (mean)"))
    for task, row in results["tasks"].items():
        psnr, ssim = row["psnr"], row["ssim"]
        table.add_row(
            task, " ".join(f"{v:.3f}" for v in psnr["values"]), f"{psnr['mean']:.3f} ± {psnr['std']:.3f}",
            f"{row['input_psnr']:.3f}", f"{row['gain_over_input']:+.3f}",
            "n/a" if row["gain_to_noise"] is None else f"{row['gain_to_noise']:.1f}",
            f"{ssim['mean']:.4f} ± {ssim['std']:.4f}",
            "n/a" if row["val_psnr"] is None else f"{row['val_psnr']['mean']:.3f} ± {row['val_psnr']['std']:.3f}",
            f"{statistics.mean(t for t in row['train_seconds'] if t is not None):.1f}",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__, json_results=False)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="train.seed values (default 0 1 2)")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS), help="default: both")
    parser.add_argument("--reuse-pipeline-run", action="store_true",
                        help="for the seed params.yaml already has, read metrics/<task>.json (the pipeline's own "
                             "train + evaluate at that seed) instead of training it again")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="a params value for every seed, e.g. train.ema_decay=0.99 (YAML, read as DVC reads it)")
    add_run_arguments(parser, "2 steps, 1 test image, seeds 0 1: checks the script runs (minutes, not hours)")
    args = parser.parse_args(argv)
    if args.overrides and args.reuse_pipeline_run:
        parser.error("--reuse-pipeline-run reads the committed run, which --set does not describe")
    if any("=" not in item for item in args.overrides):
        parser.error("--set takes KEY=VALUE")
    seeds = SMOKE_SEEDS if args.smoke else args.seeds
    if len(seeds) < 2:
        parser.error("--seeds needs at least 2 seeds for a standard deviation")
    inputs = {task: pipeline_inputs(args.build, TASKS[task]) for task in args.tasks}  # before any training
    out = output_dir(args.out, args.smoke)
    params = run_params(load_params(args.params), args.tasks, args.smoke)
    params = with_overrides(params, {key: parse_yaml(value) for key, value in
                                     (item.split("=", 1) for item in args.overrides)})

    console = Console()
    tasks = {}
    for task in args.tasks:
        runs, seconds, vals = [], [], []
        for seed in seeds:
            console.rule(f"{task}: seed {seed}")
            committed = REPO / "metrics" / f"{task}.json"
            if args.reuse_pipeline_run and seed == params["train"].get("seed", 0) and committed.is_file():
                # The pipeline is deterministic, so its own run at this seed is this seed's result.
                metrics, took, val = json.loads(committed.read_text()), None, committed_val_psnr(task)
                console.print(f"seed {seed}: the pipeline's own run, {committed.relative_to(REPO)}")
            else:
                metrics, took, val = train_and_evaluate(task, with_overrides(params, {"train.seed": seed}),
                                                        *inputs[task])
            runs.append(metrics)
            seconds.append(took)
            vals.append(val)
        tasks[task] = task_summary(runs, seconds, vals)
    results = summary(seeds, params, tasks)
    print_table(results, console)
    write_json(results, out / "seed_noise.json", console)


if __name__ == "__main__":
    main()
