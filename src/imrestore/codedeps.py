"""Which library files decide a stage's output: the import closure of its script, read from the source.

dvc.yaml lists each stage's code as deps so that a change to it re-runs the stage. Written by hand, that list
drifts from the imports (a stage that calls a function in a module it does not list is not re-run when that
function changes). `import_closure` derives it instead: every `imrestore` module reachable through `import`
statements, including those inside functions, which is where this package imports its heavy modules.
tests/test_record.py checks dvc.yaml against it, and training fingerprints its own code with it.

Plumbing that cannot change what a stage writes is left out (`PLUMBING`): error types, atomic writes,
progress bars, the params loader, this module and the package's `__init__`. So are files that hold nothing
but a docstring (the groups' `__init__.py`): importing them runs no code, so editing their prose re-runs
nothing.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name
PLUMBING = frozenset({
    "imrestore", "imrestore.errors", "imrestore.atomic", "imrestore.progress", "imrestore.params",
    "imrestore.codedeps",  # fingerprints code for resuming; what a run computes does not depend on it
})


def module_file(module: str) -> Path | None:
    """The source file of an `imrestore` module (a package's __init__.py), or None if there is none."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(source: Path) -> set[str]:
    """The `imrestore` modules that `source` imports anywhere in its body. The package imports absolutely
    only (tests/test_code_deps.py checks that), so a relative import is refused rather than missed."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"), str(source))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise ValueError(f"{source}:{node.lineno}: relative import; the package imports absolutely")
            found.add(node.module or "")
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {name for name in found if name.split(".")[0] == PACKAGE and module_file(name) is not None}


def import_closure(scripts: Iterable[Path]) -> list[Path]:
    """Every library file the scripts reach through imports, plumbing left out, sorted."""
    pending = [Path(script) for script in scripts]
    seen: set[str] = set()
    while pending:
        for name in imported_modules(pending.pop()):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                reached = ".".join(parts[:depth])
                if reached not in seen and module_file(reached) is not None:
                    seen.add(reached)
                    pending.append(module_file(reached))
    return sorted(path for name in seen - PLUMBING if not only_docstring(path := module_file(name)))


def only_docstring(source: Path) -> bool:
    """True if the file's body is at most a docstring: importing it defines nothing."""
    body = ast.parse(source.read_text(encoding="utf-8"), str(source)).body
    return len(body) == 0 or (len(body) == 1 and isinstance(body[0], ast.Expr)
                              and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str))


def code_digest(scripts: Iterable[Path]) -> str:
    """sha256 over the files of `import_closure(scripts)`: changes exactly when the code they run changes."""
    digest = hashlib.sha256()
    for path in import_closure(scripts):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
