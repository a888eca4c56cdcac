"""What a pull request or an experiment changed, and the paper's Table 2, from what DVC records per revision.

- `write_report`: a markdown report (plus PNG plots beside it, for CML to upload) that compares the
  workspace, a git revision or a DVC experiment with a base revision: a verdict per task first, then headline
  PSNR/SSIM per task against the base (each change with a 95% paired bootstrap interval over the test images
  and a label that also weighs the noise between training seeds), the degraded input and the best classical
  baseline; `dvc metrics diff` and `dvc params diff` verbatim; training curves and per-image PSNR of both
  sides overlaid.
- `paired_delta`: that interval and label for one metric of two per-image tables.
- `paper_table` / `paper_table_markdown`: Table 2's grid (blocks 9/12 × DCN kernel 3/4, per task) filled
  from `dvc exp show --json`, next to the numbers the paper publishes.

Files at a revision are read through `dvc.api.DVCFileSystem`, which serves the workspace, any git commit
and experiment commits alike, whether a file is tracked by git or by DVC. Every number is labelled with
the data that produced it: the embedded sample is synthetic and trained on a CPU budget, so it is not
comparable with the paper.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from imrestore.app.outputs import check_file, check_folder, writing
from imrestore.atomic import atomic_dir, write_text
from imrestore.data.layouts import TASKS  # task → the dataset it trains and tests on
from imrestore.errors import ImrestoreError
from imrestore.params import parse_yaml

DATASET_NAMES = {"gopro": "GoPro", "sidd": "SIDD"}
TASK_TITLES = {"deblur": "Deblurring", "denoise": "Denoising"}
HEADLINE = (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("psnr_y", "PSNR-Y (dB)"), ("ssim_y", "SSIM-Y"),
            ("ssim_3d", "SSIM-3D"))
NOT_CURVES = {"epoch"}  # DVCLive files that are bookkeeping, not a training curve

REPORT_FILE = "report.md"
REPORT_TITLE = "# imrestore report: "  # report.md's first line: how a previous report's folder is recognised
PLOT_KINDS = ("curves", "per_image")
plot_file = "{task}_{kind}.png".format  # the only other files a report's folder holds
metrics_path = "metrics/{task}.json".format
per_image_path = "metrics/{task}/per_image.csv".format
curves_dir = "dvclive/{task}/plots/metrics".format
SEED_NOISE = "benchmarks/results/seed_noise.json"  # the seed-noise benchmark's result


# --- the repository and its revisions -----------------------------------------------------------------

def _run(tool: str, root: Path, *args: str) -> subprocess.CompletedProcess:
    if tool == "dvc":  # the dvc of this interpreter's environment, as the stage scripts use
        sibling = Path(sys.executable).with_name("dvc")
        tool = str(sibling) if sibling.exists() else "dvc"
    return subprocess.run([tool, *args], cwd=root, capture_output=True, text=True, check=False)


def find_root(start: Path) -> Path:
    """The DVC repository (a directory with .dvc/, inside a git work tree) that contains `start`."""
    start = start.resolve()
    root = next((d for d in (start, *start.parents) if (d / ".dvc").is_dir()), None)
    if root is None:
        raise ImrestoreError(f"{start} is not inside a DVC repository (no .dvc/ directory found above it): "
                             "run this from the project, or `dvc init` first")
    if _run("git", root, "rev-parse", "--is-inside-work-tree").returncode != 0:
        raise ImrestoreError(f"{root} is a DVC repository but not a git repository: revisions need git "
                             "(`git init` and commit, then compare revisions)")
    return root


@dataclass(frozen=True)
class Revision:
    """One side of a comparison. `arg` is what dvc is given (None: the workspace); `sha` what is read."""

    label: str
    arg: str | None
    sha: str | None
    detail: str


def _commit(root: Path, rev: str) -> str | None:
    found = _run("git", root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    return found.stdout.strip() if found.returncode == 0 else None


def _subject(root: Path, sha: str) -> str:
    return _run("git", root, "log", "-1", "--format=%h %s", sha).stdout.strip()


def _experiment(root: Path, name: str) -> tuple[str, str] | None:
    """(commit, baseline commit) of the DVC experiment `name`; DVC keeps them as refs/exps/<base sha>/<name>."""
    refs = _run("git", root, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps").stdout
    found = [(sha, m[1] + m[2]) for sha, ref in (line.split(" ", 1) for line in refs.splitlines())
             if (m := re.fullmatch(r"refs/exps/([0-9a-f]{2})/([0-9a-f]{38})/(.+)", ref)) and m[3] == name]
    if len(found) > 1:
        raise ImrestoreError(f"experiment name {name!r} is ambiguous: it exists on {len(found)} baselines "
                             f"({', '.join(base[:7] for _, base in found)}); pass its commit with --rev instead")
    return found[0] if found else None


def workspace_revision(root: Path) -> Revision:
    head = _commit(root, "HEAD")
    dirty = _run("git", root, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    on = f"on {_subject(root, head)}" if head else "no commits yet"
    return Revision("workspace", None, None, f"workspace ({on}{', with uncommitted changes' if dirty else ''})")


def resolve_revision(root: Path, rev: str, *, experiments_only: bool = False) -> Revision:
    """A git revision (commit, branch, tag, HEAD~1) or a DVC experiment name, as `dvc metrics diff` takes."""
    sha = None if experiments_only else _commit(root, rev)
    if sha:
        shown = sha[:7] if len(rev) > 12 and sha.startswith(rev) else rev  # a long SHA reads as a short one
        return Revision(f"`{shown}`", rev, sha, f"`{shown}` → {_subject(root, sha)}")
    experiment = _experiment(root, rev)
    if experiment:
        sha, baseline = experiment
        return Revision(f"experiment `{rev}`", rev, sha,
                        f"experiment `{rev}` ({sha[:7]}, based on {_subject(root, baseline)})")
    if experiments_only:
        raise ImrestoreError(f"no DVC experiment named {rev!r} in {root}: `dvc exp list --all-commits` lists them")
    raise ImrestoreError(f"unknown revision {rev!r} in {root}: expected a git commit, branch or tag "
                         "(`git log --oneline`) or a DVC experiment name (`dvc exp list --all-commits`)")


class Snapshot:
    """The repository's files at one revision, read the way DVC sees them."""

    def __init__(self, root: Path, rev: Revision):
        from dvc.api import DVCFileSystem

        self.rev = rev
        try:
            self.fs = DVCFileSystem(str(root), rev=rev.sha)
        except Exception as error:  # a revision DVC cannot open at all
            raise ImrestoreError(f"DVC cannot read {rev.detail}: {error}") from error

    def text(self, path: str) -> str | None:
        try:
            return self.fs.read_text(path)
        except (FileNotFoundError, IsADirectoryError):
            return None

    def json(self, path: str) -> dict | None:
        text = self.text(path)
        try:
            return None if text is None else json.loads(text)
        except json.JSONDecodeError as error:
            raise ImrestoreError(f"{path} at {self.rev.detail} is not valid JSON: {error}") from error

    def table(self, path: str) -> pd.DataFrame | None:
        text = self.text(path)
        return None if text is None else pd.read_csv(io.StringIO(text), sep="\t" if path.endswith(".tsv") else ",")

    def params(self) -> dict:
        return parse_yaml(self.text("params.yaml") or "") or {}

    def curves(self, task: str) -> dict[str, pd.DataFrame]:
        """DVCLive's step-wise curves for a task, keyed like `train/loss`."""
        folder = curves_dir(task=task)
        found = {}
        for path in sorted(self.fs.find(folder)):
            name = path.removeprefix(folder + "/").removesuffix(".tsv")
            if path.endswith(".tsv") and name not in NOT_CURVES:
                found[name] = self.table(path)
        return found


# --- labels: which data produced a number ---------------------------------------------------------------

def data_kind(task: str, metrics: dict | None, params: dict) -> str:
    """"sample" or "real": the metrics say so; older metrics without the key fall back to params."""
    if metrics and metrics.get("data") in ("sample", "real"):
        return metrics["data"]
    source = ((params.get("download") or {}).get(TASKS[task]) or {}).get("source", "sample")
    return "sample" if source == "sample" else "real"


def describe_model(model: dict | None) -> str:
    """The architecture that made a metrics file, as evaluate records it (`model` in metrics/<task>.json)."""
    model = model or {}
    arch = model.get("arch", "paper")  # metrics written before model.arch existed are the paper's network's
    count = f", {model['parameters']:,} parameters" if isinstance(model.get("parameters"), int) else ""
    if arch == "nafnet":
        return f"NAFNet ({describe_size(model)}{count})"
    if "blocks" not in model:
        return "the paper's network"
    return f"the paper's network ({describe_size(model)}{count})"


def describe_size(model: dict) -> str:
    """A network's size in a few words, from the `model` evaluate records (NAFNet: its `size` string)."""
    if model.get("arch") == "nafnet":
        return model.get("size", "size not recorded")
    blocks = model.get("blocks", "?")
    return f"{blocks} block{'' if blocks == 1 else 's'}, DCN kernel {model.get('dcn_kernel', '?')}"


def describe_data(task: str, metrics: dict | None, params: dict) -> str:
    dataset = DATASET_NAMES[TASKS[task]]
    sample = data_kind(task, metrics, params) == "sample"
    text = f"embedded sample (synthetic {dataset}-like data)" if sample else f"real {dataset}"
    text += describe_budget(task, params)
    device = ((metrics or {}).get("inference") or {}).get("device")
    if device:
        text += f", evaluated on {device}"
    if sample:
        text += ": not comparable with the paper"
    return text


def describe_budget(task: str, params: dict) -> str:
    """`, trained 600 steps of 4 × 64² crops` from the revision's `train` section, where a null is filled by the
    task's own value, as training.with_task_values fills it (read here without importing the training stack)."""
    train = params.get("train") or {}
    own = (train.get("per_task") or {}).get(task) or {}
    steps, batch, crop = (own.get(key) if train.get(key) is None else train.get(key)
                          for key in ("max_steps", "batch_size", "crop"))
    if not all(isinstance(value, int) for value in (steps, batch, crop)):
        return ""
    return f", trained {steps:,} steps of {batch} × {crop}² crops"


# --- how sure a change is: paired bootstrap over the test images, against the noise of training seeds -----

RESAMPLES = 10_000
UNCHANGED = 1e-9  # a per-image difference this small is no change: the same stage output, read back
INTERVAL_METRICS = ("psnr", "ssim")  # in the per-image table, and measured by the seed-noise benchmark


@dataclass(frozen=True)
class Delta:
    """The mean per-image change head − base over the n images on both sides, its 95% interval [low, high],
    the label, and the threshold the mean had to clear against seed noise (0: seed noise not measured)."""

    delta: float
    low: float
    high: float
    n: int
    label: str  # improved | regressed | within noise | unchanged
    threshold: float


def noise_threshold(seed_std: float | None) -> float:
    """2·√2·σ: two independent trainings differ with std √2·σ, and ±2 std holds ~95% of such differences."""
    return 0.0 if seed_std is None else 2 * math.sqrt(2) * seed_std


def _label(differences: np.ndarray, low: float, high: float, threshold: float) -> str:
    mean = differences.mean()
    if np.all(np.abs(differences) <= UNCHANGED):
        return "unchanged"
    if low > 0 and mean > threshold:
        return "improved"
    if high < 0 and mean < -threshold:
        return "regressed"
    return "within noise"


def paired_delta(base: pd.DataFrame, head: pd.DataFrame, column: str, seed_std: float | None,
                 resamples: int = RESAMPLES, seed: int = 0) -> Delta | None:
    """`column`'s change from base to head over the images (joined on `name`) that both tables hold, with a 95%
    percentile bootstrap interval; None when no image has a finite value on both sides."""
    pairs = head[["name", column]].merge(base[["name", column]], on="name", suffixes=("", "_base"))
    pairs = pairs.sort_values("name", kind="stable")  # the same images in another row order: the same draws
    differences = (pairs[column] - pairs[f"{column}_base"]).to_numpy(dtype=float)
    differences = differences[np.isfinite(differences)]  # NaN, or inf PSNR of an exact restoration on both sides
    n = differences.size
    if n == 0:
        return None
    # resample images, the unit another test set would vary; a fixed seed keeps the report reproducible
    picks = np.random.default_rng(seed).integers(0, n, size=(resamples, n), dtype=np.int32)
    low, high = (float(v) for v in np.percentile(differences[picks].mean(axis=1), [2.5, 97.5]))
    threshold = noise_threshold(seed_std)
    return Delta(float(differences.mean()), low, high, n, _label(differences, low, high, threshold), threshold)


def seed_noise(snapshots: tuple[Snapshot, Snapshot]) -> tuple[dict | None, str]:
    """The seed-noise benchmark's result and the revision it was read at: the compared side's, else the base's."""
    for snap in reversed(snapshots):
        found = snap.json(SEED_NOISE)
        if isinstance(found, dict):
            return found, snap.rev.label
    return None, ""


def seed_std(noise: dict | None, task: str, key: str) -> float | None:
    """σ of the test `key` across training seeds, from `tasks.<task>.<key>.std`; None where not measured."""
    entry = (((noise or {}).get("tasks") or {}).get(task) or {}).get(key)
    std = entry.get("std") if isinstance(entry, dict) else None
    measured = isinstance(std, (int, float)) and not isinstance(std, bool) and math.isfinite(std) and std >= 0
    return float(std) if measured else None


@dataclass(frozen=True)
class Comparison:
    """A task's per-image comparison: the change of each metric both tables hold, and the line that says how
    the intervals were made (or why there are none)."""

    deltas: dict[str, Delta]
    stds: dict[str, float | None]
    note: str


# --- the report ---------------------------------------------------------------------------------------

def _number(value, key: str) -> str:
    if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.2f}" if "psnr" in key else f"{value:.4f}"


def _signed(value: float, key: str) -> str:
    return ("+" if value >= 0 else "−") + _number(abs(value), key)


def _change(new, old, key: str) -> str:
    if not all(isinstance(v, (int, float)) for v in (new, old)):
        return "—"
    return _signed(new - old, key)


def _unit(key: str) -> str:
    return " dB" if "psnr" in key else ""


def _interval(delta: Delta, key: str, unit: str = "") -> str:
    return f"{_signed(delta.delta, key)}{unit} [{_signed(delta.low, key)}, {_signed(delta.high, key)}]"


def _noise_note(deltas: dict[str, Delta], stds: dict[str, float | None], noise: tuple[dict | None, str],
                applies: bool, data: str) -> str:
    values, where = noise
    measured = [f"{key.upper()} σ {_number(stds[key], key)}{_unit(key)}, threshold 2·√2·σ = "
                f"{_number(deltas[key].threshold, key)}{_unit(key)}" for key in deltas if stds[key] is not None]
    if measured:
        return (f"Seed noise ({SEED_NOISE} at {where}, {len(values.get('seeds') or [])} seeds): "
                f"{'; '.join(measured)}. Improved or regressed: the interval excludes 0 and the change exceeds "
                "the threshold.")
    if values is None:
        why = f"no {SEED_NOISE} at either revision"
    else:
        why = f"{SEED_NOISE} at {where} " + (
            "has no σ for this task" if applies else f"was measured on {values.get('data')} data, this is {data}")
    return f"Seed noise not measured ({why}): improved or regressed means only that the interval excludes 0."


def compare_task(task: str, tables: tuple[pd.DataFrame | None, pd.DataFrame | None], labels: tuple[str, str],
                 noise: tuple[dict | None, str], data: str) -> Comparison:
    """Base and compared per-image tables → the change of PSNR and SSIM with intervals and labels. `noise` is
    (seed_noise.json, where it was read); it applies only to the `data` ("sample" or "real") it was measured on."""
    missing = [f"{side} {label}" for side, label, table in zip(("base", "compared"), labels, tables)
               if table is None or table.empty]
    if missing:
        return Comparison({}, {}, f"No interval: no per-image results ({per_image_path(task=task)}) at "
                                  f"{' or '.join(missing)}.")
    values = noise[0]
    applies = values is not None and values.get("data", data) == data  # σ on the sample says nothing of real data
    stds = {key: seed_std(values if applies else None, task, key) for key in INTERVAL_METRICS}
    deltas = {key: found for key in INTERVAL_METRICS if key in tables[0] and key in tables[1]
              and (found := paired_delta(*tables, key, stds[key])) is not None}
    if not deltas:
        return Comparison({}, stds, "No interval: no test image has results on both sides.")
    n = next(iter(deltas.values())).n
    only_one_side = len(set(tables[0]["name"]) ^ set(tables[1]["name"]))
    how = (f"Change: the mean per-image difference over the {n} test images on both sides"
           + (f" ({only_one_side} more are only on one side and not counted)" if only_one_side else "")
           + f", with a 95% paired bootstrap interval ({RESAMPLES:,} resamples of the images).")
    return Comparison(deltas, stds, f"{how} {_noise_note(deltas, stds, noise, applies, data)}")


def verdict(task: str, comparison: Comparison, old: dict | None, new: dict | None) -> str:
    """One line for the top of the report: each headline metric's label, change, interval and seed noise."""
    if not comparison.deltas:
        plain = ", ".join(f"{key.upper()} {_change((new or {}).get(key), (old or {}).get(key), key)}"
                          for key in INTERVAL_METRICS)
        return f"- **{task}**: {plain}; {comparison.note[0].lower()}{comparison.note[1:]}"
    parts = []
    for key, delta in comparison.deltas.items():
        std = comparison.stds.get(key)
        noise = f"seed noise σ {_number(std, key)}{_unit(key)}" if std is not None else "seed noise not measured"
        parts.append(f"{key.upper()} {delta.label} ({_interval(delta, key, _unit(key))}, {noise})")
    return f"- **{task}**: " + "; ".join(parts)


def _best_baseline(metrics: dict, key: str) -> tuple[str, float] | None:
    scored = [(name, b[key]) for name, b in (metrics.get("baselines") or {}).items()
              if isinstance(b, dict) and isinstance(b.get(key), (int, float))]
    return max(scored, key=lambda item: item[1]) if scored else None


def headline_table(base: dict | None, head: dict | None, base_label: str, head_label: str,
                   deltas: dict[str, Delta] | None = None) -> list[str]:
    """PSNR/SSIM of both sides, the change, and the compared side against its input and best baseline; then the
    same for each standard benchmark in the metrics (e.g. `sidd_validation`), which has no baselines. The main
    test set's change of a metric in `deltas` is the paired per-image one, with its interval and label."""
    lines = [f"| metric | base {base_label} | compared {head_label} | change | degraded input | best baseline |",
             "|---|---:|---:|---:|---:|---:|"]
    benchmarks = {**((base or {}).get("benchmarks") or {}), **((head or {}).get("benchmarks") or {})}
    parts = [("", base or {}, head or {})] + [
        (f"{name} ", ((base or {}).get("benchmarks") or {}).get(name) or {},
         ((head or {}).get("benchmarks") or {}).get(name) or {}) for name in sorted(benchmarks)]
    for prefix, old_part, new_part in parts:
        reference = new_part or old_part
        for key, title in HEADLINE:
            old, new = old_part.get(key), new_part.get(key)
            if old is None and new is None:
                continue
            ours = new if new is not None else old
            given = (reference.get("input") or {}).get(key)
            versus_input = f"{_number(given, key)} ({_change(ours, given, key)})" if given is not None else "—"
            best = _best_baseline(reference, key)
            versus_best = f"{_number(best[1], key)} `{best[0]}` ({_change(ours, best[1], key)})" if best else "—"
            paired = (deltas or {}).get(key) if not prefix else None  # benchmarks have no per-image table
            change = f"{_interval(paired, key)} **{paired.label}**" if paired else _change(new, old, key)
            lines.append(f"| {prefix}{title} | {_number(old, key)} | {_number(new, key)} | {change} "
                         f"| {versus_input} | {versus_best} |")
    return lines


def _dvc_markdown(root: Path, what: str, base: Revision, head: Revision) -> list[str]:
    args = [what, "diff", "--md", base.arg] + ([head.arg] if head.arg else [])
    result = _run("dvc", root, *args)
    shown = f"`dvc {' '.join(args)}`"
    if result.returncode != 0:
        return [f"{shown} failed:", "", "```", (result.stderr or result.stdout).strip(), "```"]
    rows = [line for line in result.stdout.strip().splitlines() if line.startswith("|")]
    notes = [f"> {line}" for line in result.stderr.strip().splitlines() if line.strip()]
    if len(rows) <= 2:  # dvc prints the header and the separator even when nothing changed
        return [f"{shown}: no changes", *notes]
    return [f"{shown}:", "", result.stdout.strip(), *([""] + notes if notes else [])]


def _figure(columns: int, rows: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, columns, figsize=(3.4 * columns, 2.8 * rows), squeeze=False, dpi=90)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})  # no version stamp: same data, same bytes
    plt.close(fig)


BASE_STYLE = {"color": "#8c8c8c", "linestyle": "--"}
HEAD_STYLE = {"color": "#1f64b4"}


def plot_curves(base: dict[str, pd.DataFrame], head: dict[str, pd.DataFrame], labels: tuple[str, str],
                title: str, path: Path) -> None:
    names = [n for n in sorted(set(base) | set(head), key=lambda n: (not n.startswith(("train", "val")), n))]
    columns = min(3, len(names))
    fig, axes = _figure(columns, math.ceil(len(names) / columns))
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        for curves, label, style in ((base, labels[0], BASE_STYLE), (head, labels[1], HEAD_STYLE)):
            table = curves.get(name)
            if table is None or "step" not in table:
                continue
            value = [c for c in table.columns if c not in ("step", "timestamp")][-1]
            table = table.sort_values("step", kind="stable")
            ax.plot(table["step"], table[value], label=label, linewidth=1.2, **style)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def plot_per_image(reference: pd.Series, compared: pd.Series, labels: tuple[str, str], title: str,
                   path: Path) -> None:
    """Left: compared vs reference PSNR per image (above the diagonal = better). Right: the gains, sorted."""
    fig, axes = _figure(2)
    scatter, bars = axes[0]
    scatter.scatter(reference, compared, s=12, color=HEAD_STYLE["color"])
    low, high = min(reference.min(), compared.min()), max(reference.max(), compared.max())
    scatter.plot([low, high], [low, high], linewidth=0.8, **BASE_STYLE)
    scatter.set_xlabel(f"{labels[0]} PSNR (dB)", fontsize=8)
    scatter.set_ylabel(f"{labels[1]} PSNR (dB)", fontsize=8)
    gain = (compared - reference).sort_values(kind="stable").to_numpy()
    bars.bar(range(len(gain)), gain, width=0.8 if len(gain) < 50 else 1.0,
             color=["#2a9d4b" if g >= 0 else "#c8403a" for g in gain])
    bars.axhline(0, color="black", linewidth=0.6)
    bars.set_xticks([])
    bars.set_xlabel("images, sorted", fontsize=8)
    bars.set_ylabel(f"PSNR gain over {labels[0]} (dB)", fontsize=8)
    for ax in (scatter, bars):
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def _per_image_section(task: str, tables: tuple[pd.DataFrame | None, pd.DataFrame | None], labels: tuple[str, str],
                       out: Path) -> list[str]:
    before, compared = tables
    if compared is None or compared.empty:
        return [f"_No per-image results ({per_image_path(task=task)}) at {labels[1]}._"]
    name = plot_file(task=task, kind="per_image")
    if before is not None and not before.empty:
        joined = compared.merge(before, on="name", suffixes=("", "_base"))
        if not joined.empty:
            plot_per_image(joined["psnr_base"], joined["psnr"], ("base", "compared"),
                           f"{task}: per-image PSNR, {len(joined)} test images", out / name)
            dropped = max(len(compared), len(before)) - len(joined)
            note = f" ({dropped} images are only on one side)" if dropped else ""
            return [f"Per-image PSNR, compared against base{note}:", "", f"![{task} per-image PSNR]({name})"]
    plot_per_image(compared["input_psnr"], compared["psnr"], ("input", "compared"),
                   f"{task}: per-image PSNR against the degraded input", out / name)
    return [f"No per-image results at base {labels[0]}; the compared side against its degraded input:", "",
            f"![{task} per-image PSNR]({name})"]


def _task_section(task: str, base: Snapshot, head: Snapshot, params: tuple[dict, dict],
                  noise: tuple[dict | None, str], out: Path) -> tuple[str | None, list[str]]:
    """(the task's verdict line, its section); (None, []) when neither side has anything of the task."""
    labels = (base.rev.label, head.rev.label)
    legend = (f"base: {labels[0]}".replace("`", ""), f"compared: {labels[1]}".replace("`", ""))
    old, new = base.json(metrics_path(task=task)), head.json(metrics_path(task=task))
    old_curves, new_curves = base.curves(task), head.curves(task)
    if not any((old, new, old_curves, new_curves)):
        return None, []
    tables = base.table(per_image_path(task=task)), head.table(per_image_path(task=task))
    data = data_kind(task, new, params[1]) if new else data_kind(task, old, params[0])
    comparison = compare_task(task, tables, labels, noise, data)
    lines = [f"## {TASK_TITLES[task]}: {DATASET_NAMES[TASKS[task]]} (`{task}`)", ""]
    for side, metrics, rev_params, snap in (("base", old, params[0], base), ("compared", new, params[1], head)):
        if metrics is None:
            lines.append(f"- {side}: **no {metrics_path(task=task)} at {snap.rev.label}** (the revision predates "
                         "the evaluate stage, or it was not run there)")
        else:
            lines.append(f"- {side}: {describe_model(metrics.get('model'))}; {metrics.get('n_images', '?')} "
                         f"{metrics.get('split', 'test')} images, {describe_data(task, metrics, rev_params)}")
    if old and new and data_kind(task, old, params[0]) != data_kind(task, new, params[1]):
        lines.append("- **the two sides ran on different data: the changes below compare different test sets**")
    if old or new:
        lines += ["", *headline_table(old, new, *labels, comparison.deltas), "", comparison.note]
    lines += ["", "### Training curves", ""]
    if old_curves or new_curves:
        name = plot_file(task=task, kind="curves")
        plot_curves(old_curves, new_curves, legend, f"{task}: base (dashed) vs compared", out / name)
        missing = [label for label, curves in zip(labels, (old_curves, new_curves)) if not curves]
        if missing:
            lines += [f"No curves ({curves_dir(task=task)}) at {missing[0]}.", ""]
        lines += [f"![{task} training curves]({name})"]
    else:
        lines.append(f"_No training curves ({curves_dir(task=task)}) at either revision._")
    lines += ["", "### Per-image PSNR", "", *_per_image_section(task, tables, labels, out), ""]
    return verdict(task, comparison, old, new), lines


def write_report(base: str, rev: str | None = None, exp: str | None = None, out: Path | str = "build/pr-report",
                 cwd: Path | None = None) -> Path:
    """Write `out/report.md` and its PNGs (atomically, as one folder); return the report's path.

    The new folder replaces `out` whole, so `out` must be new, empty or a previous report (`check_report_folder`)."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    out = (cwd / out).resolve()
    check_report_folder(out)
    root = find_root(cwd)
    base_rev = resolve_revision(root, base)
    if exp is not None:
        head_rev = resolve_revision(root, exp, experiments_only=True)
    else:
        head_rev = resolve_revision(root, rev) if rev is not None else workspace_revision(root)
    snapshots = Snapshot(root, base_rev), Snapshot(root, head_rev)
    params = tuple(snap.params() for snap in snapshots)

    with writing(out), atomic_dir(out) as tmp:
        noise = seed_noise(snapshots)
        done = [_task_section(task, *snapshots, params, noise, tmp) for task in TASKS]
        sections = [line for _, section in done for line in section]
        verdicts = [line for line, _ in done if line]
        lines = [f"{REPORT_TITLE}{head_rev.label} vs {base_rev.label}", ""]
        if verdicts:  # first, for the reviewer; the paragraph after them keeps them apart from the list below
            lines += [*verdicts, "", "Each change: mean per-image difference [95% paired bootstrap interval]; "
                      "improved or regressed only when the interval excludes 0 and the change exceeds the seed "
                      "noise. Details under each task.", ""]
        lines += [f"- base: {base_rev.detail}", f"- compared: {head_rev.detail}", ""]
        lines += sections or [f"_No metrics or training curves for {', '.join(TASKS)} at either revision._", ""]
        lines += ["## Metrics", "", *_dvc_markdown(root, "metrics", base_rev, head_rev), "",
                  "## Params", "", *_dvc_markdown(root, "params", base_rev, head_rev), ""]
        (tmp / REPORT_FILE).write_text("\n".join(lines), encoding="utf-8")
        check_report_folder(out)  # again: atomic_dir now removes `out`, and files may have arrived meanwhile
    return out / REPORT_FILE


def check_report_folder(out: Path) -> None:
    """Refuse an `out` that a new report must not replace: anything but a new or empty folder, or a previous
    report's folder holding report.md (recognised by its title) and its plots, nothing else. A report replaces
    its folder whole, so anything else there (a user's notes, a file, the repository itself with --out .) would
    be deleted."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise ImrestoreError(f"--out {out} is a file; expected the report's folder (a new or empty folder, or a "
                             "previous report's); choose another --out")
    check_folder(out.parent, f"the folder that holds the report's folder {out}")
    if not out.is_dir():
        return
    ours = {REPORT_FILE, *(plot_file(task=task, kind=kind) for task in TASKS for kind in PLOT_KINDS)}
    entries = sorted(out.iterdir())
    foreign = [entry.name for entry in entries
               if entry.name not in ours or entry.is_symlink() or not entry.is_file()]
    if entries and not foreign and not _is_report(out / REPORT_FILE):
        foreign = [f"{REPORT_FILE} without the title \"{REPORT_TITLE.strip()}\"" if (out / REPORT_FILE).exists()
                   else f"plots without a {REPORT_FILE}"]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ImrestoreError(f"--out {out} holds what a report did not write ({shown}); a report replaces its "
                             f"whole folder, so expected a new or empty folder, or a previous report's "
                             f"({REPORT_FILE} and its plots only): choose another --out")


def _is_report(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return handle.readline().startswith(REPORT_TITLE)
    except OSError:
        return False


# --- the paper's Table 2 ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PaperRow:
    task: str
    psnr: float
    ssim: float
    blocks: int | None = None  # None: the paper publishes the row, our notes do not record its configuration
    dcn_kernel: int | None = None


# Table 2 of Thosar, Joshi, Pullagura, "Image Restoration Using Deep Learning: Image Deblurring and Image
# Denoising using Deformable Convolution Neural Networks and Large Kernel Attention" (University at Buffalo),
# as published, in the paper's row order. The paper ties only two rows to a configuration (README, "Experiments"):
# GoPro 26.60/0.90 is 12 blocks with kernel 4, SIDD 26.63/0.88 is 12 blocks with kernel 3.
PAPER_TABLE_2 = (
    PaperRow("deblur", 26.53, 0.89),
    PaperRow("deblur", 25.40, 0.81),
    PaperRow("deblur", 26.60, 0.90, blocks=12, dcn_kernel=4),
    PaperRow("deblur", 25.20, 0.81),
    PaperRow("denoise", 26.63, 0.88, blocks=12, dcn_kernel=3),
    PaperRow("denoise", 25.73, 0.83),
)
GRID = ((9, 3), (9, 4), (12, 3), (12, 4))  # (model.blocks, model.dcn_kernel), the rows of Table 2
GRID_COMMAND = "dvc exp run --queue -S model.blocks=9,12 -S model.dcn_kernel=3,4 && dvc queue start -j 1"


@dataclass(frozen=True)
class Result:
    task: str
    blocks: int
    dcn_kernel: int
    psnr: float
    ssim: float
    n_images: int | None
    data: str  # sample | real
    source: str  # which experiment, commit or the workspace
    timestamp: str  # ISO, local time like `dvc exp show`; the workspace's is when its metrics file was written
    arch: str = "paper"  # model.arch; NAFNet rows have no blocks/kernel (None) and say their size instead
    size: str = ""
    published: str = ""  # a checkpoint trained elsewhere (its name in evaluate.published), not by the pipeline


def _results_of(entry: dict, source: str, root: Path) -> list[Result]:
    """Results of one `dvc exp show --json` row; none for queued, running or failed rows or stale metrics."""
    executor = entry.get("executor") or {}
    if entry.get("error") or executor.get("state") not in (None, "success") or not entry.get("data"):
        return []
    data = entry["data"]
    params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
    configured = params.get("model") or {}
    found = []
    for task in TASKS:
        metrics = ((data.get("metrics") or {}).get(metrics_path(task=task)) or {}).get("data")
        if not metrics or not isinstance(metrics.get("psnr"), (int, float)):
            continue
        model = metrics.get("model") or configured  # what produced the numbers, as the evaluate stage records it
        arch = model.get("arch", "paper")
        if arch != configured.get("arch", arch):
            continue  # params changed since the metrics were made: `dvc repro` has not run yet
        if arch == "nafnet":  # the size comes from the metrics (params may name it, e.g. `sidd-width32`)
            config, size = (None, None), describe_size(model)
        else:
            config, size = (model.get("blocks"), model.get("dcn_kernel")), ""
            if config != (configured.get("blocks", config[0]), configured.get("dcn_kernel", config[1])):
                continue
        timestamp = data.get("timestamp")
        if source == "workspace":
            written = (root / metrics_path(task=task)).stat().st_mtime
            timestamp = datetime.fromtimestamp(written).isoformat(timespec="seconds")
        kind = data_kind(task, metrics, params)
        found.append(Result(task, *config, metrics["psnr"], metrics.get("ssim"), metrics.get("n_images"), kind,
                            source, timestamp or "", arch, size))
        for name, theirs in (metrics.get("published") or {}).items():  # evaluated alongside, by the same code
            if isinstance(theirs.get("psnr"), (int, float)):
                model = theirs.get("model") or {}
                found.append(Result(task, None, None, theirs["psnr"], theirs.get("ssim"), metrics.get("n_images"),
                                    kind, source, timestamp or "", model.get("arch", "?"),
                                    describe_size(model), published=name))
    return found


def collect_results(root: Path, all_commits: bool = False) -> list[Result]:
    """Every successful result in `dvc exp show --json`: the workspace, baseline commits and experiments."""
    shown = _run("dvc", root, "exp", "show", "--json", *(["--all-commits"] if all_commits else []))
    if shown.returncode != 0:
        raise ImrestoreError(f"`dvc exp show --json` failed in {root}:\n{shown.stderr.strip()}")
    return results_from_exp_show(json.loads(shown.stdout or "[]"), root)


def results_from_exp_show(shown: list[dict], root: Path) -> list[Result]:
    """`dvc exp show --json` (DVC 3): a list of baseline rows, the workspace first; each row has `rev`, `name`,
    `data` (`timestamp`, `params`/`metrics` as {file: {"data": {...}}}), `error` and `experiments`, a list of
    {"name", "executor" (None once committed, else {"state": queued|running|success|failed, ...}), "revs": [row]}.
    """
    results = []
    for baseline in shown:
        rev = baseline.get("rev", "")
        results += _results_of(baseline, "workspace" if rev == "workspace" else baseline.get("name") or rev[:7], root)
        for experiment in baseline.get("experiments") or []:
            for run in experiment.get("revs") or []:
                row = {**run, "executor": experiment.get("executor")}
                results += _results_of(row, run.get("name") or experiment.get("name") or run.get("rev", "")[:7], root)
    return results


def paper_table(results: list[Result]) -> dict[str, list[tuple[int, int, Result | None, PaperRow | None]]]:
    """Per task, the grid rows: (blocks, kernel, our latest result or None, the paper's row if known)."""
    table = {}
    for task in TASKS:
        rows = []
        for blocks, kernel in GRID:
            ours = [r for r in results if not r.published
                    and (r.task, r.arch, r.blocks, r.dcn_kernel) == (task, "paper", blocks, kernel)]
            latest = _latest(ours)
            paper = next((p for p in PAPER_TABLE_2 if (p.task, p.blocks, p.dcn_kernel) == (task, blocks, kernel)),
                         None)
            rows.append((blocks, kernel, latest, paper))
        table[task] = rows
    return table


def _latest(results: list[Result]) -> Result | None:
    # the newest; on a tie, a named experiment or commit rather than the workspace that holds the same
    return max(results, key=lambda r: (r.timestamp, r.source != "workspace"), default=None)


def peer_table(results: list[Result]) -> dict[str, list[Result]]:
    """Per task, the latest result of each other architecture and size (NAFNet) and of each published checkpoint,
    to read beside Table 2."""
    table = {}
    for task in TASKS:
        peers = [r for r in results if r.task == task and (r.arch != "paper" or r.published)]
        kinds = sorted({(r.published, r.arch, r.size) for r in peers})
        table[task] = [_latest([r for r in peers if (r.published, r.arch, r.size) == kind]) for kind in kinds]
    return table


PEER_COLUMNS = ("architecture", "size", "PSNR", "SSIM", "images", "data", "from")


def _peer_cells(result: Result) -> list[str]:
    arch = {"nafnet": "NAFNet", "paper": "the paper's"}.get(result.arch, result.arch)
    origin = f"`{result.source}`"
    if result.published:
        origin = f"published `{result.published}`, evaluated in {origin}"
    return [arch, result.size, _number(result.psnr, "psnr"), _number(result.ssim, "ssim"),
            str(result.n_images) if result.n_images is not None else "—",
            {"sample": "embedded sample"}.get(result.data, result.data), origin]


def _ours_label(task: str, rows) -> str:
    kinds = {r.data for _, _, r, _ in rows if r}
    dataset = DATASET_NAMES[TASKS[task]]
    if kinds == {"sample"}:
        return f"Ours on the embedded sample (synthetic {dataset}-like data, CPU budget): not comparable with the paper"
    if kinds == {"real"}:
        return f"Ours on real {dataset}"
    return "Ours on mixed data: see the data column" if kinds else "No results of ours yet"


def _unmapped(task: str) -> list[PaperRow]:
    return [p for p in PAPER_TABLE_2 if p.task == task and p.blocks is None]


COLUMNS = ("blocks", "DCN kernel", "PSNR ours", "SSIM ours", "PSNR paper", "SSIM paper", "images", "data", "from")
SHORT_COLUMNS = ("blocks", "kernel", "PSNR", "SSIM", "paper\nPSNR", "paper\nSSIM", "images", "data", "from")


def _cells(blocks: int, kernel: int, ours: Result | None, paper: PaperRow | None, short: bool = False) -> list[str]:
    dataset = {"sample": "sample" if short else "embedded sample", "real": "real"}
    return [str(blocks), str(kernel),
            _number(ours.psnr, "psnr") if ours else "—", _number(ours.ssim, "ssim") if ours else "—",
            f"{paper.psnr:.2f}" if paper else "", f"{paper.ssim:.2f}" if paper else "",
            str(ours.n_images) if ours and ours.n_images is not None else "—",
            dataset.get(ours.data, ours.data) if ours else "—", f"`{ours.source}`" if ours else "not run"]


def paper_table_markdown(table, peers: dict[str, list[Result]] | None = None) -> str:
    about = ("Paper: Thosar, Joshi, Pullagura, *Image Restoration Using Deep Learning*, Table 2. Ours: `psnr` and "
             "`ssim` of metrics/<task>.json from the latest successful experiment (or the workspace) with that "
             "configuration, read from `dvc exp show --json`.")
    lines = ["# Table 2: residual blocks × DCN kernel", "", about, ""]
    for task, rows in table.items():
        lines += [f"## {TASK_TITLES[task]}: {DATASET_NAMES[TASKS[task]]}", "", f"{_ours_label(task, rows)}.",
                  "", "| " + " | ".join(COLUMNS) + " |", "|" + "---:|" * 7 + "---|---|"]
        lines += ["| " + " | ".join(_cells(*row)) + " |" for row in rows]
        other = _unmapped(task)
        if other:
            listed = "; ".join(f"{p.psnr:.2f} dB / {p.ssim:.2f}" for p in other)
            lines += ["", f"Other published rows (configuration not recorded in our notes): {listed}."]
        if (peers or {}).get(task):
            lines += ["", "Other architectures (`model.arch`) and published checkpoints (`evaluate.published`), on the "
                      "same test images, scored by the same code:", "",
                      "| " + " | ".join(PEER_COLUMNS) + " |", "|---|---|" + "---:|" * 3 + "---|---|"]
            lines += ["| " + " | ".join(_peer_cells(r)) + " |" for r in peers[task]]
        lines.append("")
    if any(ours is None for rows in table.values() for _, _, ours, _ in rows):
        lines += [f"Configurations not run yet: queue the grid with `{GRID_COMMAND}`.", ""]
    return "\n".join(lines)


def paper_table_rich(table, peers: dict[str, list[Result]] | None = None) -> list:
    from rich import box
    from rich.table import Table

    shown = []
    for task, rows in table.items():
        grid = Table(title=f"Table 2, {TASK_TITLES[task].lower()} ({DATASET_NAMES[TASKS[task]]})",
                     box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
                     caption=f"{_ours_label(task, rows)}. Other published rows (configuration not recorded): "
                             + ("; ".join(f"{p.psnr:.2f}/{p.ssim:.2f}" for p in _unmapped(task)) or "none"))
        for column in SHORT_COLUMNS:
            grid.add_column(column, justify="left" if column in ("data", "from") else "right", no_wrap=True)
        for row in rows:
            grid.add_row(*(cell.strip("`") for cell in _cells(*row, short=True)))
        shown.append(grid)
        if (peers or {}).get(task):
            others = Table(title=f"Other architectures and published checkpoints, {TASK_TITLES[task].lower()}",
                           box=box.SIMPLE_HEAD,
                           show_edge=False, pad_edge=False, collapse_padding=True)
            for column in PEER_COLUMNS:
                others.add_column(column, justify="right" if column in ("PSNR", "SSIM", "images") else "left")
            for result in peers[task]:
                others.add_row(*(cell.strip("`") for cell in _peer_cells(result)))
            shown.append(others)
    return shown


def write_paper_table(out: Path | str, all_commits: bool = False, cwd: Path | None = None):
    """Collect, render and write the markdown table to `out`; return (Table 2, the peers) for the terminal."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    check_file(cwd / out, "the table's markdown file (--out)")
    results = collect_results(find_root(cwd), all_commits)
    table, peers = paper_table(results), peer_table(results)
    with writing(cwd / out):
        write_text(cwd / out, paper_table_markdown(table, peers))
    return table, peers
