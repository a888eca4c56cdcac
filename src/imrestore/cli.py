"""`imrestore` command line: the few things users do outside `dvc repro`.

  imrestore data                      materialise data/ (the raw inputs data.dvc tracks) and cache it in DVC
  imrestore validate DIR --dataset D  check a dataset folder in the upstream layout, without the pipeline
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from imrestore.errors import ImrestoreError, exit_on_error
from imrestore.layouts import DATASETS

DATA_DIR = Path("data")
DATA_DVC = Path("data.dvc")


def _dvc(*args: str) -> subprocess.CompletedProcess:
    dvc = Path(sys.executable).with_name("dvc")
    return subprocess.run([str(dvc) if dvc.exists() else "dvc", *args], capture_output=True, text=True)


def _data_matches_dvc_file() -> bool:
    """True when data/ holds exactly what data.dvc records (whether or not the DVC cache has it yet)."""
    if not DATA_DIR.is_dir():
        return False
    status = _dvc("status", str(DATA_DVC), "--json")
    if status.returncode != 0:
        raise ImrestoreError(f"`dvc status {DATA_DVC}` failed:\n{status.stderr.strip()}")
    changes = json.loads(status.stdout or "{}").get(str(DATA_DVC), [])
    return all(change == {"changed outs": {"data": "not in cache"}} for change in changes)


def prepare_data() -> str:
    """Make data/ match data.dvc and make sure the DVC cache holds it; return what was done.

    In order: data/ already matches; restore from the DVC cache (e.g. after `dvc pull`); or, when data.dvc
    records the embedded sample, copy the photographs from the installed scikit-image. Never changes
    data.dvc: recording new raw data is the user's `dvc add data`.
    """
    from imrestore.sample import materialise_photos

    if not DATA_DVC.is_file():
        raise ImrestoreError(f"{DATA_DVC} not found: run from the repository root")
    how = "already in place"
    if not _data_matches_dvc_file():
        _dvc("checkout", str(DATA_DVC))
        how = "restored from the DVC cache"
    if not _data_matches_dvc_file():
        meta = (yaml.safe_load(DATA_DVC.read_text()) or {}).get("meta") or {}
        if not meta.get("embedded_sample"):
            raise ImrestoreError(
                f"data/ does not match {DATA_DVC} and the DVC cache does not have it. Run `dvc pull` to fetch "
                f"the raw data from the remote, or `dvc add data` to record data/ as it is now"
            )
        materialise_photos(DATA_DIR)
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


def _validate_folder(folder: Path, dataset: str, gopro_input: str) -> dict:
    from imrestore.layouts import find_layout_root
    from imrestore.validation import validate_dataset

    root = find_layout_root(folder, dataset)
    with tempfile.TemporaryDirectory() as scratch:  # expected_pairs=None: this checks files, not counts
        return validate_dataset(dataset, root, None, Path(scratch) / "manifest.csv",
                                Path("reports/validation-adhoc") / dataset, gopro_input)


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="imrestore", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("data", help="materialise data/ from the DVC cache or the embedded sample")
    check = commands.add_parser("validate", help="check a dataset folder in the upstream layout")
    check.add_argument("folder", type=Path)
    check.add_argument("--dataset", choices=DATASETS, required=True)
    check.add_argument("--gopro-input", default="blur", choices=("blur", "blur_gamma"))
    args = parser.parse_args(argv)

    if args.command == "data":
        print(f"data/: {prepare_data()}; DVC cache up to date")
    elif args.command == "validate":
        summary = _validate_folder(args.folder, args.dataset, args.gopro_input)
        print(f"{args.dataset}: {summary['pairs']} valid pairs {summary['splits']}")


if __name__ == "__main__":
    main()
