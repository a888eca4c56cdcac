"""Read params.yaml the way DVC does, and turn sections into checked settings.

Stage scripts read their section here (not through `dvc.api`, which would import all of DVC for a dict).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imrestore.errors import ImrestoreError

PARAMS_FILE = Path("params.yaml")


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml as DVC reads it: ruamel's safe loader, YAML 1.2.

    PyYAML speaks YAML 1.1, where `1e-07` (no dot) is a string; `dvc exp run -S train.optim.lr=1e-7` writes
    exactly that, and DVC itself reads it as a number, so the stage must too.
    """
    from ruamel.yaml import YAMLError

    try:
        params = parse_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImrestoreError(f"{path} not found: run stages from the repository root (dvc repro does)") from None
    except YAMLError as exc:
        raise ImrestoreError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(params, dict):
        raise ImrestoreError(f"{path}: expected a mapping at the top level, found {type(params).__name__}")
    return params


def parse_yaml(text: str) -> Any:
    """YAML text as DVC parses params files (YAML 1.2); `load_params` explains why not PyYAML.

    ruamel is imported here, not at the top: the models import this module for its checks, and the GPU
    machine the benchmarks run on has no ruamel (benchmarks/README.md, the GPU suite)."""
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).load(text)


def section(params: dict[str, Any], dotted: str) -> Any:
    """`section(p, "download.gopro")` with an error naming the missing key."""
    node: Any = params
    walked = []
    for key in dotted.split("."):
        walked.append(key)
        if not isinstance(node, dict) or key not in node:
            raise ImrestoreError(f"params.yaml: missing {'.'.join(walked)} (needed for {dotted})")
        node = node[key]
    return node


# Keys that were renamed, and why: a user's params.yaml or `-S` written for the old name gets told.
RENAMED_KEYS = {
    "size": ("crop_size", "DVC's run-cache ignores every param named `size`, so a changed `size` was silently "
                          "served from the cache (treeverse/dvc#10296)"),
}


def reject_unknown(mapping: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if not unknown:
        return
    key = unknown[0]
    if key in RENAMED_KEYS and RENAMED_KEYS[key][0] in allowed:
        new, why = RENAMED_KEYS[key]
        raise ImrestoreError(f"params.yaml: {where}.{key} is now {where}.{new}: {why}")
    raise ImrestoreError(f"params.yaml: unknown key {where}.{key}; expected one of {', '.join(sorted(allowed))}")


def stage_argument(choices: tuple[str, ...], name: str = "dataset") -> str:
    """The one positional argument of a foreach stage script (`python stages/x.py gopro`)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument(name, choices=choices)
    return getattr(parser.parse_args(), name)


def require_int(mapping: dict[str, Any], key: str, where: str, minimum: int = 0) -> int:
    """`mapping[key]` as an int ≥ minimum, or an error naming `where.key`."""
    value = mapping.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ImrestoreError(f"params.yaml: {where}.{key} must be an integer ≥ {minimum}, found {value!r}")
    return value
