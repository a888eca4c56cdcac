"""`imrestore` command line: the few things users do outside `dvc repro`.

  imrestore data                      materialise data/ (the raw inputs data.dvc tracks) and cache it in DVC
  imrestore params [-S KEY=VALUE…]    compose params.yaml from conf/ as `dvc exp run` does (--check: compare)
  imrestore validate DIR --dataset D  check a dataset folder in the upstream layout, without the pipeline
  imrestore restore PATH --task T     restore your own images (a file or a folder) with a trained model
  imrestore export --task T           a trained model as ONNX (dynamic batch, height and width)
  imrestore report --base REV [--rev REV | --exp NAME] [--out DIR]
                                      a pull-request report (markdown + PNG plots) of what changed against REV
  imrestore paper-table [--out FILE]  the paper's Table 2 (blocks × DCN kernel) from `dvc exp show`
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from imrestore.data.layouts import DATASETS, TASKS
from imrestore.errors import ImrestoreError, exit_on_error

DATA_DIR = Path("data")
DATA_DVC = Path("data.dvc")


def _dvc(*args: str) -> subprocess.CompletedProcess:
    dvc = Path(sys.executable).with_name("dvc")
    return subprocess.run([str(dvc) if dvc.exists() else "dvc", *args], capture_output=True, text=True, check=False)


def _data_matches_dvc_file() -> bool:
    """True when data/ holds exactly what data.dvc records, whether or not the DVC cache has it yet.

    Not `dvc status`: it says "not in cache" whenever the cache lacks the recorded version, whatever data/ holds,
    which once let a teammate's `imrestore data` (no `dvc pull`) record the sample over the team's real data.
    """
    if not DATA_DIR.is_dir():
        return False
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(".") as repo:
            (out,) = repo.stage.load_one(str(DATA_DVC)).outs
            return out.get_hash() == out.hash_info
    except (DvcException, ValueError) as exc:
        raise ImrestoreError(f"{DATA_DVC}: DVC cannot compare it with data/: {exc}") from None


def _records_the_sample() -> bool:
    """Whether data.dvc records the embedded sample: its meta names the sample's hash, and `dvc add data` (which
    keeps the meta) has not recorded other data since. `embedded_sample: true` is the older, unchecked form."""
    recorded = yaml.safe_load(DATA_DVC.read_text()) or {}
    sample = (recorded.get("meta") or {}).get("embedded_sample")
    outs = recorded.get("outs") or [{}]
    return sample is True or (bool(sample) and sample == outs[0].get("md5"))


def _copy_sample() -> None:
    """Copy the embedded sample into data/: the photographs from scikit-image, and each folder's README.

    Staged first, so that a file of data/ it would replace with other bytes is refused, not overwritten: DVC
    has no copy of it (or its checkout would have restored data/), so it may be the only one."""
    from imrestore.acquire.sample import materialise_photos
    from imrestore.atomic import ensure_text, write_bytes
    from imrestore.evaluation.testsets import BENCHMARK_READMES
    from imrestore.models.weights import CHECKPOINT_READMES

    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch)
        materialise_photos(staged)
        for folder, readmes in (("benchmarks", BENCHMARK_READMES), ("checkpoints", CHECKPOINT_READMES)):
            for name, text in readmes.items():
                ensure_text(staged / folder / name / "README.md", text)
        files = {path.relative_to(staged): path.read_bytes() for path in sorted(staged.rglob("*")) if path.is_file()}
    differing = [str(DATA_DIR / name) for name, data in files.items()
                 if os.path.lexists(DATA_DIR / name) and not ((DATA_DIR / name).is_file()
                                                               and (DATA_DIR / name).read_bytes() == data)]
    if differing:
        raise ImrestoreError(
            f"data/ does not match {DATA_DVC}, and the embedded sample would replace files the DVC cache has no "
            f"copy of: {', '.join(differing)}. Keep them with `dvc add data` (they are then your raw data), or "
            "move them away, and run again")
    for name, data in files.items():
        if not (DATA_DIR / name).is_file():
            write_bytes(DATA_DIR / name, data)


def prepare_data() -> str:
    """Make data/ match data.dvc and make sure the DVC cache holds it; return what was done.

    In order: data/ already matches; restore from the DVC cache (e.g. after `dvc pull`); or, when data.dvc
    records the embedded sample, copy it from the installed scikit-image. Never changes data.dvc (recording
    new raw data is the user's `dvc add data`) and never replaces a file of data/ that DVC has no copy of.
    """
    if not DATA_DVC.is_file():
        raise ImrestoreError(f"{DATA_DVC} not found: run from the repository root")
    if os.path.lexists(DATA_DIR) and not DATA_DIR.is_dir():
        raise ImrestoreError(f"{DATA_DIR} is a file; expected the folder {DATA_DVC} tracks (move the file away)")
    how = "already in place"
    if not _data_matches_dvc_file():
        _dvc("checkout", str(DATA_DVC))  # refuses, and leaves them, files it has no copy of: judged below
        how = "restored from the DVC cache"
    if not _data_matches_dvc_file():
        if not _records_the_sample():
            raise ImrestoreError(
                f"data/ does not match {DATA_DVC} and the DVC cache does not have what it records. Run `dvc pull` "
                f"to fetch the raw data from the remote, or `dvc add data` to record data/ as it is now"
            )
        _copy_sample()
        how = "copied from scikit-image"
        if not _data_matches_dvc_file():
            raise ImrestoreError(
                f"data/ still differs from {DATA_DVC} after copying the sample photographs: either data/ has "
                "other files (remove them, or `dvc add data` to record them), or the installed scikit-image "
                "differs from requirements.lock (rebuild the venv: make clean-venv test)"
            )
    commit = _dvc("commit", "--force", str(DATA_DVC))  # put the bytes in the cache so `dvc push` has them
    if commit.returncode != 0:
        raise ImrestoreError(f"`dvc commit {DATA_DVC}` failed:\n{commit.stderr.strip()}")
    return how


PARAMS_SECTIONS = {"download", "validate", "split", "patches", "model", "train", "evaluate"}  # one per stage kind


def check_params(params: dict) -> list:
    """Parse every section of `params` as the stages will (both datasets, both tasks) and return the results, so
    a bad value or an unknown key is named before the pipeline runs rather than at the stage that reads it: a
    section nothing reads (`+modle.blocks=12`) would otherwise be ignored without a word."""
    from imrestore.acquire.sources import SourceConfig
    from imrestore.data.patches import PatchGeometry
    from imrestore.data.split import SplitConfig
    from imrestore.data.validation import ValidateConfig
    from imrestore.evaluation.evaluate import EvaluateSettings
    from imrestore.params import reject_unknown, section
    from imrestore.training import TrainConfig

    unknown = sorted(set(params) - PARAMS_SECTIONS)
    if unknown:
        raise ImrestoreError(f"params.yaml: unknown section {unknown[0]}; expected one of "
                             f"{', '.join(sorted(PARAMS_SECTIONS))}")
    parsed = []
    for dataset in DATASETS:
        parsed += [SourceConfig.for_dataset(dataset, section(params, f"download.{dataset}")),
                   ValidateConfig.for_dataset(dataset, section(params, f"validate.{dataset}")),
                   SplitConfig.for_dataset(dataset, section(params, f"split.{dataset}")),
                   PatchGeometry.for_dataset(dataset, section(params, f"patches.{dataset}"))]
    for name in ("download", "validate", "split", "patches"):
        reject_unknown(params[name], set(DATASETS), where=name)
    for task in TASKS:
        parsed += [TrainConfig.from_params(params, task), EvaluateSettings.for_task(params, task)]
    return parsed


def _validate_folder(folder: Path, dataset: str, gopro_input: str) -> dict:
    from imrestore.data.layouts import find_layout_root
    from imrestore.data.validation import validate_dataset

    root = find_layout_root(folder, dataset)
    with tempfile.TemporaryDirectory() as scratch:  # expected_pairs=None: this checks files, not counts
        return validate_dataset(dataset, root, None, Path(scratch) / "manifest.csv",
                                Path("reports/validation-adhoc") / dataset, gopro_input)


# One function per subcommand; `main` wires each to its parser with `set_defaults(run=...)`.

def _data(args: argparse.Namespace) -> None:
    print(f"data/: {prepare_data()}; DVC cache up to date")


def _params(args: argparse.Namespace) -> None:
    from imrestore.atomic import write_text
    from imrestore.params import PARAMS_FILE, compose, differences, load_params, parse_yaml

    composed = compose(Path("."), args.set)
    composed_params = parse_yaml(composed)
    check_params(composed_params)  # before params.yaml is written: a bad value is named now, not at its stage
    try:
        current = load_params(PARAMS_FILE) if PARAMS_FILE.is_file() else {}
    except ImrestoreError as unreadable:  # a generated file: a broken one is what composing is for
        if args.check:
            raise
        write_text(PARAMS_FILE, composed)
        print(f"{PARAMS_FILE}: composed from conf/, replacing a file that could not be read ({unreadable})")
        return
    changed = differences(current, composed_params)
    if args.check:
        if changed:
            raise ImrestoreError(f"{PARAMS_FILE} is not what conf/ composes to ({len(changed)} values differ; "
                                 "run `imrestore params` to compose it):\n  " + "\n  ".join(changed))
        print(f"{PARAMS_FILE}: as conf/ composes it")
        return
    if PARAMS_FILE.is_file() and PARAMS_FILE.read_text(encoding="utf-8") == composed:
        print(f"{PARAMS_FILE}: unchanged")
        return
    write_text(PARAMS_FILE, composed)
    listed = "".join(f"\n  {line}" for line in changed)
    print(f"{PARAMS_FILE}: composed from conf/ ({len(changed)} values changed){':' if changed else ''}{listed}")


def _validate(args: argparse.Namespace) -> None:
    summary = _validate_folder(args.folder, args.dataset, args.gopro_input)
    print(f"{args.dataset}: {summary['pairs']} valid pairs {summary['splits']}")


def _restore(args: argparse.Namespace) -> None:
    if not Path(args.source).exists():  # before torch is imported: a typo is answered at once
        raise ImrestoreError(f"{args.source}: no such file or folder")
    from imrestore.app.restore import restore_files
    from imrestore.evaluation.inference import DOWNSCALE, InferenceConfig

    if args.tile < 0 or args.tile % DOWNSCALE:  # the flag spells params.yaml's null as 0, so it says so itself
        raise ImrestoreError(f"imrestore restore: --tile must be 0 (the whole image at once) or a multiple of "
                             f"{DOWNSCALE} ≥ {DOWNSCALE}, found {args.tile}")
    config = InferenceConfig.from_params({"tile": args.tile or None, "overlap": args.overlap,
                                          "tile_batch": args.tile_batch, "self_ensemble": args.self_ensemble},
                                         label=lambda key: f"imrestore restore: --{key.replace('_', '-')}")
    report = restore_files(args.source, args.out, args.task, weights=args.weights, config=config,
                           device=args.device)
    for image, notes in report.notes.items():
        print(f"{image}: {'; '.join(notes)}")
    print(f"restored {len(report.written)} image(s) into {args.out}")
    if report.failed:
        raise ImrestoreError(f"{len(report.failed)} image(s) could not be read and were skipped:\n"
                             + "\n".join(report.failed.values()))


def _export(args: argparse.Namespace) -> None:
    from imrestore.app.export import export_onnx
    from imrestore.app.restore import load_task_weights

    weights, net = load_task_weights(args.task, args.weights)
    out = args.out or Path("build/export") / f"{args.task}.onnx"
    exported = export_onnx(net, out, metadata={"imrestore.task": args.task, "imrestore.weights": str(weights)})
    check = ("onnxruntime is not installed, so it was not run" if exported.max_difference is None else
             f"onnxruntime matches PyTorch to {exported.max_difference:.1e} on a random image")
    print(f"wrote {exported.path} (the {args.task} model from {weights}; input `image`, float32 N×3×H×W in [0, 1], "
          f"H, W ≥ 16); {check}")


def _report(args: argparse.Namespace) -> None:
    from imrestore.app.report import write_report

    report = write_report(args.base, rev=args.rev, exp=args.exp, out=args.out)
    plots = sorted(p.name for p in report.parent.glob("*.png"))
    print(f"wrote {report} ({len(plots)} plots: {', '.join(plots) or 'none'})")


def _paper_table(args: argparse.Namespace) -> None:
    from rich.console import Console

    from imrestore.app.report import paper_table_rich, write_paper_table

    table, peers = write_paper_table(args.out, all_commits=args.all_commits)
    console = Console()
    for grid in paper_table_rich(table, peers):
        console.print(grid, "")
    console.print(f"wrote {args.out}", highlight=False)


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="imrestore", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="materialise data/ from the DVC cache or the embedded sample")
    data.set_defaults(run=_data)

    params = commands.add_parser("params", help="compose params.yaml from conf/ (as `dvc exp run` does)")
    params.add_argument("-S", "--set", action="append", default=[], metavar="OVERRIDE",
                        help="a Hydra override, as for `dvc exp run -S`: train=paper, model.blocks=12")
    params.add_argument("--check", action="store_true", help="only compare: fail if params.yaml differs")
    params.set_defaults(run=_params)

    check = commands.add_parser("validate", help="check a dataset folder in the upstream layout")
    check.add_argument("folder", type=Path)
    check.add_argument("--dataset", choices=DATASETS, required=True)
    check.add_argument("--gopro-input", default="blur", choices=("blur", "blur_gamma"))
    check.set_defaults(run=_validate)

    restore = commands.add_parser("restore", help="restore your own images with a trained model")
    restore.add_argument("source", type=Path, help="an image file or a folder of images (searched recursively)")
    restore.add_argument("--task", choices=tuple(TASKS), required=True)
    restore.add_argument("--weights", type=Path,
                         help="model folder (model.pt + config.json) or a training checkpoint .ckpt "
                              "(default: models/<task>, what `dvc repro` or `dvc pull` puts there)")
    restore.add_argument("--out", type=Path, default=Path("restored"), help="folder for the restored PNGs")
    restore.add_argument("--tile", type=int, default=512, help="tile side in pixels, a multiple of 4 (0: whole image)")
    restore.add_argument("--overlap", type=int, default=32, help="pixels shared by neighbouring tiles")
    restore.add_argument("--tile-batch", type=int, default=1, help="tiles per forward pass")
    restore.add_argument("--self-ensemble", action="store_true", help="average the 8 flips/rotations (8x slower)")
    restore.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    restore.set_defaults(run=_restore)

    export = commands.add_parser("export", help="a trained model as ONNX for deployment")
    export.add_argument("--task", choices=tuple(TASKS), required=True)
    export.add_argument("--format", choices=("onnx",), default="onnx")
    export.add_argument("--weights", type=Path, help="model folder or training checkpoint (default: models/<task>)")
    export.add_argument("--out", type=Path, help="file to write (default: build/export/<task>.onnx)")
    export.set_defaults(run=_export)

    report = commands.add_parser("report", help="markdown report of metrics, params and plots against a base")
    report.add_argument("--base", required=True, help="git revision (or DVC experiment) to compare against")
    compared = report.add_mutually_exclusive_group()
    compared.add_argument("--rev", help="git revision to report on (default: the workspace)")
    compared.add_argument("--exp", help="DVC experiment name to report on")
    report.add_argument("--out", type=Path, default=Path("build/pr-report"), help="folder for report.md + PNGs")
    report.set_defaults(run=_report)

    table = commands.add_parser("paper-table", help="the paper's Table 2 from DVC experiments")
    table.add_argument("--out", type=Path, default=Path("build/paper-table.md"), help="markdown file to write")
    table.add_argument("-A", "--all-commits", action="store_true",
                       help="use experiments of all commits, not only those of HEAD")
    table.set_defaults(run=_paper_table)

    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
