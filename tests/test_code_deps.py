"""dvc.yaml lists as code deps exactly the library files each stage's script imports, directly or not.

A module a stage imports but does not list is a change that does not re-run the stage (evaluate@ once called
`load_network` without listing where it lived); a listed module it does not import re-runs it for nothing.
The closure is read from the source by `imrestore.codedeps`, the same derivation training fingerprints its
own code with.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from imrestore.codedeps import PACKAGE_DIR, code_digest, import_closure, imported_modules, only_docstring

REPO = Path(__file__).resolve().parents[1]
LIBRARY = "src/imrestore"


def stage_definitions() -> dict[str, dict]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def listed_library_files(deps: list[str]) -> tuple[set[Path], list[str]]:
    """Files the deps cover under src/imrestore (folders expanded), and the folders themselves."""
    files, folders = set(), []
    for dep in deps:
        if not dep.startswith(LIBRARY):
            continue
        path = (REPO / dep).resolve()
        if path.is_dir():
            folders.append(dep)
            files.update(p.resolve() for p in path.rglob("*.py"))
        else:
            files.add(path)
    return files, folders


@pytest.mark.parametrize("stage", sorted(stage_definitions()))
def test_each_stage_lists_the_library_files_its_script_imports(stage):
    definition = stage_definitions()[stage]
    script = re.match(r"python (stages/\S+\.py)", definition["cmd"])[1]
    assert script in definition["deps"], f"{stage}: its script {script} is not among its deps"
    needed = set(import_closure([REPO / script]))
    listed, folders = listed_library_files(definition["deps"])
    relative = lambda paths: sorted(str(p.relative_to(REPO)) for p in paths)  # noqa: E731
    assert not needed - listed, f"{stage} imports but does not list {relative(needed - listed)}"
    stale = {p for p in listed - needed if not any(p.is_relative_to(REPO / f) for f in folders)}
    assert not stale, f"{stage} lists but does not import {relative(stale)}"
    for folder in folders:  # a folder dep is there for what the stage imports from it
        assert any(p.is_relative_to(REPO / folder) for p in needed), f"{stage}: nothing imported from {folder}"


def test_the_closure_follows_imports_inside_functions_and_packages(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("def main():\n    from imrestore.models.weights import load_network\n")
    names = {str(p.relative_to(PACKAGE_DIR)) for p in import_closure([script])}
    assert {"models/weights.py", "models/network.py"} <= names
    assert "errors.py" not in names  # plumbing: cannot change what a stage writes
    assert "models/__init__.py" not in names  # a docstring only: importing it runs no code


def test_only_a_file_that_defines_nothing_is_left_out_as_prose(tmp_path):
    prose, code = tmp_path / "prose.py", tmp_path / "code.py"
    prose.write_text('"""What the group holds."""\n')
    code.write_text('"""What the group holds."""\nDEFAULT = 3\n')
    assert only_docstring(prose) and not only_docstring(code)
    assert only_docstring(PACKAGE_DIR / "data" / "__init__.py")


def test_the_package_imports_absolutely_so_the_closure_misses_nothing():
    for source in sorted(PACKAGE_DIR.rglob("*.py")):
        relative = [n for n in ast.walk(ast.parse(source.read_text())) if isinstance(n, ast.ImportFrom) and n.level]
        assert not relative, f"{source}: relative import at line {relative[0].lineno}"
        imported_modules(source)


def test_the_training_fingerprint_is_the_train_stage_closure():
    from imrestore.training import training_code_digest

    assert training_code_digest() == code_digest([REPO / "stages" / "train.py"])
