"""The committed dvc.lock must record what the committed code produces.

Pull requests compare their metrics with `dvc metrics diff main`, which reads the
metrics that dvc.lock and metrics/ on main vouch for. If code a stage depends on
changes but the pipeline is not re-run, dvc.lock still carries the hashes (and the
metrics) of the old code, and every later diff compares against numbers that no
commit can reproduce.

This test catches that without running any stage: it re-hashes each code
dependency that dvc.lock records (paths under stages/ or src/) and compares the
result with the recorded hash. Data deps are left out on purpose: they are large
and may be absent from a fresh clone, and a change to them shows up in
`dvc status` anyway.

The hashes come from dvc-data's own `build()` (the function DVC calls for every
dependency, files and directories alike) with DVC's own .dvcignore filter, so the
test cannot disagree with `dvc status` about what "changed" means.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from dvc.ignore import DvcIgnoreFilter
from dvc_data.hashfile.build import build
from dvc_data.hashfile.db import HashFileDB
from dvc_objects.fs import MemoryFileSystem
from dvc_objects.fs.local import LocalFileSystem

REPO = Path(__file__).resolve().parents[1]
CODE_PREFIXES = ("stages/", "src/")
FIX = "run `make repro` and commit dvc.lock, metrics/ and dvclive/ with the change"


def _hash_name(dep: dict) -> str:
    # DVC 3 writes `hash: md5` next to each entry and hashes the raw bytes. An entry
    # without that field was written by DVC 2, whose md5 first turned CRLF into LF
    # in text files; DVC reads such entries as "md5-dos2unix" (dvc/output.py), so
    # re-hash them the same way or every legacy entry would look stale.
    return dep.get("hash") or "md5-dos2unix"


def stale_code_deps(root: Path, lock_path: Path) -> list[tuple[str, str, str, str]]:
    """(stage, path, recorded md5, current md5) for every code dep whose hash differs.

    `root` is the repository root the dep paths are relative to; `lock_path` the
    dvc.lock to check. Both are parameters so a test can point this at a copy.
    """
    root = root.resolve()
    fs = LocalFileSystem()
    # DVC hashes directory deps with the repo's .dvcignore applied (so __pycache__/
    # never reaches the `.dir` listing); build the same filter DVC's Repo builds.
    ignore = DvcIgnoreFilter(fs, str(root))
    # build() needs an object DB only to take a staging area from; with
    # dry_run=True nothing is written, so an in-memory one keeps the test pure.
    odb = HashFileDB(MemoryFileSystem(), "/record-check")

    lock = yaml.safe_load(lock_path.read_text())
    computed: dict[tuple[str, str], str] = {}  # many stages share a module; hash once
    stale = []
    for stage, entry in lock.get("stages", {}).items():
        for dep in entry.get("deps", []):
            path = dep["path"]
            if not path.startswith(CODE_PREFIXES):
                continue
            name = _hash_name(dep)
            if (path, name) not in computed:
                target = root / path
                if not target.exists():
                    computed[path, name] = "<missing>"
                else:
                    _, _, obj = build(odb, str(target), fs, name, ignore=ignore, dry_run=True)
                    computed[path, name] = obj.hash_info.value
            if computed[path, name] != dep.get("md5"):
                stale.append((stage, path, dep.get("md5"), computed[path, name]))
    return stale


def _report(stale: list[tuple[str, str, str, str]]) -> str:
    lines = [f"  {stage}: {path} (dvc.lock {old}, now {new})" for stage, path, old, new in stale]
    return (
        "dvc.lock records code that differs from the working tree:\n"
        + "\n".join(lines)
        + f"\n{FIX}"
    )


def test_dvc_lock_records_current_code():
    stale = stale_code_deps(REPO, REPO / "dvc.lock")
    assert not stale, _report(stale)


def test_checker_reports_an_altered_file(tmp_path):
    # Prove the check can fail. Work on a copy of the lock and the code so the real
    # tree is never touched.
    shutil.copy(REPO / "dvc.lock", tmp_path / "dvc.lock")
    shutil.copy(REPO / ".dvcignore", tmp_path / ".dvcignore")
    for tree in ("stages", "src"):
        shutil.copytree(REPO / tree, tmp_path / tree, ignore=shutil.ignore_patterns("__pycache__"))

    # Start from a lock that matches the copy (the real one may be stale right now,
    # which must not make this test pass for the wrong reason): record the current
    # hashes, then check the checker agrees there is nothing to report.
    lock_path = tmp_path / "dvc.lock"
    lock = yaml.safe_load(lock_path.read_text())
    current = {path: new for _, path, _, new in stale_code_deps(tmp_path, lock_path)}
    for entry in lock["stages"].values():
        for dep in entry.get("deps", []):
            dep["md5"] = current.get(dep["path"], dep["md5"])
    lock_path.write_text(yaml.safe_dump(lock, sort_keys=False))
    code = [
        (stage, dep["path"])
        for stage, entry in lock["stages"].items()
        for dep in entry.get("deps", [])
        if dep["path"].startswith(CODE_PREFIXES)
    ]
    file_dep = next(p for _, p in code if (tmp_path / p).is_file())
    dir_dep = next((p for _, p in code if (tmp_path / p).is_dir()), None)
    if dir_dep is not None:
        # Bytecode that Python drops into a directory dep is .dvcignore'd, so DVC
        # does not count it; neither may the checker.
        (tmp_path / dir_dep / "__pycache__").mkdir(exist_ok=True)
        (tmp_path / dir_dep / "__pycache__" / "stray.pyc").write_bytes(b"\0")
    assert stale_code_deps(tmp_path, lock_path) == []

    # Alter one byte of a recorded file dep, and of a file inside a directory dep.
    targets = [tmp_path / file_dep]
    if dir_dep is not None:
        targets.append(sorted((tmp_path / dir_dep).rglob("*.py"))[0])
    for target in targets:
        data = bytearray(target.read_bytes())
        data[0] ^= 0x01  # flip one bit of the first byte
        target.write_bytes(bytes(data))

    # Every stage recording either path, and nothing else, must be reported.
    stale = stale_code_deps(tmp_path, lock_path)
    expected = {(stage, path) for stage, path in code if path in {file_dep, dir_dep}}
    assert {(stage, path) for stage, path, _, _ in stale} == expected, _report(stale)
    assert FIX in _report(stale)
