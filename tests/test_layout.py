"""The package's folders mirror the pipeline, and the README's layout section is the tree.

`ls src/imrestore` shows the stages' libraries (acquire/, data/, models/, training.py, evaluation/) and the
command (app/), plus a few plumbing modules; each stage script imports from at most two of those parts,
and what evaluates or restores images runs without Lightning.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from imrestore.codedeps import PACKAGE_DIR, PLUMBING, import_closure, imported_modules

REPO = Path(__file__).resolve().parents[1]
PARTS = {"acquire", "data", "models", "training", "evaluation", "app"}


def part_of(module: str) -> str | None:
    """The pipeline part an `imrestore.…` module belongs to; None for plumbing."""
    if module in PLUMBING or module.split(".")[1] in {"params", "atomic", "errors", "progress", "codedeps"}:
        return None
    return module.split(".")[1]


def readme_layout_entries() -> set[str]:
    """Names the README's layout block lists under src/imrestore/."""
    block = re.search(r"^## Layout\n+```\n(.*?)```", (REPO / "README.md").read_text(), re.S | re.M)[1]
    inside = block.split("src/imrestore/", 1)[1].split("\nmodels/, dvclive/")[0]
    return set(re.findall(r"^\s+([a-z_]+/|[a-z_]+\.py)", inside, re.M)) | set(
        re.findall(r"\b([a-z_]+\.py)\b", inside))


def test_the_top_level_shows_the_pipeline_parts_and_plumbing_only():
    entries = {p.name + ("/" if p.is_dir() else "") for p in PACKAGE_DIR.iterdir() if p.name != "__pycache__"}
    entries -= {"__init__.py"}
    assert {e.rstrip("/").removesuffix(".py") for e in entries} - PARTS <= {
        "params", "atomic", "errors", "progress", "codedeps"}
    assert PARTS <= {e.rstrip("/").removesuffix(".py") for e in entries}


def test_the_readme_layout_names_every_folder_and_top_level_module():
    on_disk = {p.name + ("/" if p.is_dir() else "") for p in PACKAGE_DIR.iterdir()
               if p.name not in {"__pycache__", "__init__.py"}}
    assert readme_layout_entries() == on_disk


@pytest.mark.parametrize("group", sorted(PARTS - {"training"}))
def test_each_group_says_what_it_holds(group):
    init = PACKAGE_DIR / group / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text()))
    assert doc, f"{init} has no docstring"
    modules = {p.stem for p in (PACKAGE_DIR / group).glob("*.py")} - {"__init__"}
    if group != "models":  # models/ says what it holds in one line
        missing = {m for m in modules if f"`{m}`" not in doc}
        assert not missing, f"{init} does not name {sorted(missing)}"


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "stages").glob("*.py")))
def test_each_stage_script_imports_from_at_most_two_parts(script):
    parts = {part_of(m) for m in imported_modules(REPO / "stages" / script)} - {None}
    assert 1 <= len(parts) <= 2, f"stages/{script} imports from {sorted(parts)}"


def third_party_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", ["evaluation/evaluate.py", "app/restore.py", "app/export.py"])
def test_evaluating_restoring_and_exporting_need_no_lightning(module):
    closure = import_closure([PACKAGE_DIR / module]) + [PACKAGE_DIR / module]
    users = [str(p.relative_to(PACKAGE_DIR)) for p in closure
             if third_party_imports(p) & {"lightning", "pytorch_lightning", "dvclive"}]
    assert not users, f"{module} reaches Lightning through {users}"


def test_the_check_above_would_see_lightning():
    assert {"lightning"} <= third_party_imports(PACKAGE_DIR / "training.py")
