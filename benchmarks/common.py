"""What every benchmark script shares: the package on the path, how to time, what machine ran, where results go.

Every script imports this module before `imrestore`: it puts the repository's src/ on sys.path, so the scripts
run from a checkout without installing the package (the GPU machine has no install). Module-level imports are
the standard library and rich only: gpu_suite.py imports this on a machine without dvc, dvclive, pandera,
Great Expectations, ruamel or psutil.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))


# ------------------------------------------------------------------------------------------------ timing


def no_sync() -> None:
    """Nothing to wait for: the CPU has finished when the call returns."""


def synchronizer(device) -> Callable[[], None]:
    """What makes the clock wait for `device`'s queued work: torch.cuda.synchronize on CUDA, nothing elsewhere."""
    if device.type != "cuda":
        return no_sync
    import torch

    return lambda: torch.cuda.synchronize(device)


def cpu_seconds(live_children: bool = False) -> float:
    """User + system CPU seconds so far of this process (all threads; process_time, which resolves what os.times'
    clock ticks would round to 0) and of the children it has reaped (joined ProcessPool workers, via os.times);
    with `live_children`, also of the children still running (DataLoader workers), via psutil, imported only
    then: the GPU machine lacks it and nothing timed there has workers."""
    children = os.times()
    total = time.process_time() + children.children_user + children.children_system
    if live_children:
        import psutil

        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                times = child.cpu_times()
                total += times.user + times.system
    return total


class Timing(NamedTuple):
    wall: float
    cpu: float  # CPU time beside it: unlike wall time, hardly changed when other processes share the cores


def timed(run: Callable[[], object], sync: Callable[[], object] = no_sync, *, live_children: bool = False) -> Timing:
    """Wall and CPU seconds of one `run()`. `sync` runs before the clock starts and before it stops, so work
    queued on a GPU is inside the time (CUDA events would time the device alone, but every benchmark here
    compares with a CPU reference or counts host work such as tiling, so wall time is the one figure)."""
    sync()
    cpu, start = cpu_seconds(live_children), time.perf_counter()
    run()
    sync()
    wall = time.perf_counter() - start
    return Timing(wall, cpu_seconds(live_children) - cpu)


@dataclass
class Samples:
    """The timings of repeated runs of one thing."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def best(self) -> float:  # other load only ever slows a run down: the fastest is the least disturbed
        return min(self.wall)


def alternate(runs: dict[str, Callable[[], object]], rounds: int, sync: Callable[[], object] = no_sync, *,
              warmup: int = 0, prepare: Callable[[], object] = no_sync, console: Console | None = None,
              ) -> dict[str, Samples]:
    """Time every run of `runs` once per round, after `warmup` untimed calls of each. Each round starts one
    later in the order, so load from other processes falls on all alike and no run always follows the same
    other one (whose caches it would inherit). `prepare()` runs untimed before every call; `console` gets a
    line per timed run."""
    for run in runs.values():
        for _ in range(warmup):
            prepare()
            timed(run, sync)
    names, samples = list(runs), {name: Samples() for name in runs}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            prepare()
            wall, cpu = timed(runs[name], sync)
            samples[name].wall.append(wall)
            samples[name].cpu.append(cpu)
            if console is not None:
                console.print(f"  round {index + 1}/{rounds}: {name}: {wall:.3f} s wall, {cpu:.2f} s CPU")
    return samples


def repeat(run: Callable[[], object], rounds: int, sync: Callable[[], object] = no_sync, warmup: int = 0) -> Samples:
    """`alternate` of a single run."""
    return alternate({"run": run}, rounds, sync, warmup=warmup)["run"]


def note_load(console: Console, load: list[float], cores: int, consequence: str = "") -> None:
    """Warn when other processes shared the cores (`load`: os.getloadavg()[0] before and after the runs)."""
    if max(load) > 0.5:
        console.print(f"[yellow]note: 1-minute load average {load[0]:.1f} before, {load[1]:.1f} after: other "
                      f"processes shared the {cores} cores{consequence}[/yellow]")


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """Linux's /proc/<pid>/status: its kB figures (VmRSS, VmHWM, RssAnon, ...) in bytes and PPid; {} once the
    process is gone or where there is no /proc."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    status = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields = value.split()
        if key == "PPid":
            status[key] = int(fields[0])
        elif len(fields) == 2 and fields[1] == "kB":
            status[key] = int(fields[0]) * 1024
    return status


# ------------------------------------------------------------------------------------------------ output


def wide_console(width: int | None = None) -> Console:
    """A rich console; in a pipe or a log `width` columns wide (rich assumes 80 there and wraps wide tables)."""
    return Console(width=None if sys.stdout.isatty() else width)


def new_table(title: str, columns, left=(), no_wrap: bool = False) -> Table:
    """A rich table of `columns`, figures right-aligned; the `left` ones (names) left-aligned and, with
    `no_wrap`, kept on one line."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right", no_wrap=no_wrap and column in left)
    return table


def argument_parser(doc: str, json_results: bool = True) -> argparse.ArgumentParser:
    """The script's argument parser, its docstring as the help; with `json_results` the --json option."""
    made = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if json_results:
        made.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return made


def write_json(results: dict, path: Path | None, console: Console) -> None:
    """Write `results` to `path` (when given) so runs can be compared later."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {path}")


def read_json(path: Path) -> dict | None:
    """What an earlier run wrote to `path` (the evaluate stage's metrics/<task>.json, say); None if nothing."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


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


# ------------------------------------------------------------------------- benchmarks of the pipeline's runs
# seed_noise.py and training_curve.py train and evaluate on the pipeline's own inputs; these are their shared
# options and checks. Paths are relative to the working directory, as in the pipeline (run from the repository
# root: the split tables name images by paths relative to it).

RESULTS = Path("benchmarks/results")


def add_run_arguments(parser, smoke_help: str, *, params: bool = True, build: bool = True) -> None:
    """--out and --smoke: where results go; --params and --build (unless turned off): the pipeline's inputs."""
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder for the results (default {RESULTS}; with --smoke a temporary folder)")
    parser.add_argument("--smoke", action="store_true", help=smoke_help)
    if params:
        parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                            help="params file (default params.yaml)")
    if build:
        parser.add_argument("--build", type=Path, default=Path("build"),
                            help="the pipeline's build folder: patches/<dataset>/ and splits/<dataset>.csv "
                                 "(default build)")


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
