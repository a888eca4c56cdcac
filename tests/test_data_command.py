"""`imrestore data` (`make data`) with the real git and dvc: it fills data/ as data.dvc records it, and never
records the sample over other data, nor replaces a file of data/ that DVC holds no copy of."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from commands import sh

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def clone(tmp_path) -> Path:
    """A repository holding only the committed data.dvc, as a fresh clone has it: no data/, an empty cache."""
    repo = tmp_path / "repo"
    repo.mkdir()
    sh("git", "init", "-q", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    shutil.copy2(REPO / "data.dvc", repo / "data.dvc")
    return repo


def test_data_dvc_names_the_hash_of_the_sample_it_records():
    recorded = yaml.safe_load((REPO / "data.dvc").read_text())
    assert recorded["meta"]["embedded_sample"] == recorded["outs"][0]["md5"]


def test_a_fresh_clone_gets_the_sample_and_data_dvc_stays_as_committed(clone):
    committed = (clone / "data.dvc").read_bytes()
    assert sh("imrestore", "data", cwd=clone).stdout.strip() == "data/: copied from scikit-image; DVC cache up to date"
    assert (clone / "data.dvc").read_bytes() == committed
    assert sh("imrestore", "data", cwd=clone).stdout.startswith("data/: already in place")
    shutil.rmtree(clone / "data")
    assert sh("imrestore", "data", cwd=clone).stdout.startswith("data/: restored from the DVC cache")


def test_data_recorded_by_dvc_add_is_never_replaced_by_the_sample_when_the_cache_lacks_it(clone):
    # A teammate's clone after `dvc add data` of real data: no `dvc pull` yet, so neither data/ nor the cache
    # holds it. `dvc status` says "not in cache" for that, which once read as "matches" and was committed over.
    sh("imrestore", "data", cwd=clone)
    (clone / "data" / "SIDD_Small_sRGB_Only.zip").write_bytes(b"the team's real archive")
    sh("dvc", "add", "-q", "data", cwd=clone)
    recorded = (clone / "data.dvc").read_bytes()
    assert yaml.safe_load(recorded)["meta"]["embedded_sample"]  # `dvc add` keeps the meta, hash and all
    shutil.rmtree(clone / "data")
    shutil.rmtree(clone / ".dvc" / "cache")

    result = sh("imrestore", "data", cwd=clone, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "data/ does not match data.dvc and the DVC cache does not have what it records. Run `dvc pull`" in \
        result.stderr
    assert (clone / "data.dvc").read_bytes() == recorded


def test_a_file_of_data_dvc_has_no_copy_of_is_refused_not_overwritten(clone):
    sh("imrestore", "data", cwd=clone)
    edited = {clone / "data" / "sample_photos" / "coffee.png": b"my own photograph",
              clone / "data" / "benchmarks" / "gopro" / "README.md": b"my notes\n"}
    for path, data in edited.items():
        path.write_bytes(data)
    committed = (clone / "data.dvc").read_bytes()

    result = sh("imrestore", "data", cwd=clone, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "the embedded sample would replace files the DVC cache has no copy of" in result.stderr
    assert all(str(path.relative_to(clone)) in result.stderr for path in edited)
    assert {path: path.read_bytes() for path in edited} == edited and (clone / "data.dvc").read_bytes() == committed


def test_a_file_where_data_belongs_is_named(clone):
    (clone / "data").write_text("not a folder")
    result = sh("imrestore", "data", cwd=clone, check=False)
    assert result.returncode == 1 and "error: data is a file; expected the folder data.dvc tracks" in result.stderr
