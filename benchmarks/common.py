"""What every benchmark script shares: where its results go, what machine produced them, how to time."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console


def write_json(results: dict, path: Path | None, console: Console) -> None:
    """Write `results` to `path` (when given) so runs can be compared later."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {path}")


def machine_facts(device=None) -> dict:
    """Python, torch, cores and (on CUDA) the GPU: recorded beside every result."""
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(device) if device is not None and device.type == "cuda" else None,
    }


def timed(run: Callable[[], object], sync: Callable[[], object]) -> float:
    """Wall seconds of `run()`, with `sync()` (e.g. torch.cuda.synchronize) before and after."""
    sync()
    start = time.perf_counter()
    run()
    sync()
    return time.perf_counter() - start


# ------------------------------------------------------------------------- benchmarks of the pipeline's runs
# seed_noise.py and training_curve.py train and evaluate on the pipeline's own inputs; these are their shared
# options and checks. Paths are relative to the working directory, as in the pipeline (run from the repository
# root: the split tables name images by paths relative to it).

RESULTS = Path("benchmarks/results")


def add_run_arguments(parser, smoke_help: str) -> None:
    """--out, --smoke, --params, --build: where results go and where the pipeline's inputs are."""
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder for the results (default {RESULTS}; with --smoke a temporary folder)")
    parser.add_argument("--smoke", action="store_true", help=smoke_help)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default params.yaml)")
    parser.add_argument("--build", type=Path, default=Path("build"),
                        help="the pipeline's build folder: patches/<dataset>/ and splits/<dataset>.csv (default build)")


def output_dir(out: Path | None, smoke: bool) -> Path:
    """`out` when given; else a fresh temporary folder for a smoke run (never overwriting real results)."""
    if out is not None:
        return out
    if smoke:
        import tempfile

        return Path(tempfile.mkdtemp(prefix="imrestore-bench-"))
    return RESULTS


def pipeline_inputs(build: Path, dataset: str) -> tuple[Path, Path]:
    """(patch cache, split table) of `dataset`, or an exit naming what is missing."""
    cache, split = build / "patches" / dataset, build / "splits" / f"{dataset}.csv"
    for path in (cache / "cache.json", split):
        if not path.is_file():
            raise SystemExit(f"error: {path} is missing: run `make repro` first (it builds {build}/patches and "
                             f"{build}/splits), or point --build at a build folder that has them")
    return cache, split


def with_overrides(params: dict, overrides: dict[str, object]) -> dict:
    """A deep copy of `params` with each dotted key (`train.seed`) set, creating sections as needed."""
    import copy

    params = copy.deepcopy(params)
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        node = params
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return params


def data_kind(params: dict, dataset: str) -> str:
    """"sample" when params download.<dataset>.source is the embedded sample, else "real"."""
    return "sample" if params.get("download", {}).get(dataset, {}).get("source") == "sample" else "real"
