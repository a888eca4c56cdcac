"""Read params.yaml the way DVC does, compose it from conf/ the way `dvc exp run` does, and check sections.

Stage scripts read their section here (not through `dvc.api`, which would import all of DVC for a dict).
params.yaml itself is generated: Hydra composes it from conf/config.yaml and the chosen conf/train/ preset
(.dvc/config, [hydra]), so what a preset sets is in params.yaml, where `dvc params diff` and `dvc exp show`
see it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
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


def compose(root: Path = Path("."), overrides: Sequence[str] = ()) -> str:
    """params.yaml's text as `dvc exp run -S override …` would compose it in the repository at `root`.

    DVC's own composition function with the repository's [hydra] settings, so the result is byte-identical to
    what `dvc exp run` writes. Overrides use Hydra's grammar, as `-S` does: `train=paper`, `model.blocks=12`.
    """
    from dvc.config import Config
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException

    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in RETIRED_KEYS:
            raise ImrestoreError(f"-S {override}: {key} is retired: {RETIRED_KEYS[key]}")
    root = Path(root).resolve()
    hydra = Config(dvc_dir=root / ".dvc").get("hydra", {})
    if not hydra.get("enabled", False):
        raise ImrestoreError(f"{root / '.dvc/config'}: [hydra] is not enabled, so params.yaml is not composed")
    config_dir = root / hydra.get("config_dir", "conf")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / PARAMS_FILE.name
        try:
            compose_and_dump(out, str(config_dir), None, hydra.get("config_name", "config"),
                             str(root / hydra.get("plugins_path", "")), list(overrides))
        except HydraException as exc:
            raise ImrestoreError(f"{config_dir}: cannot compose params.yaml: {exc}") from None
        return out.read_text(encoding="utf-8")


def differences(old: Any, new: Any, where: str = "") -> list[str]:
    """`a.b.c: old → new` for every value that differs between two parsed params files, in file order."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for key in [*old, *(k for k in new if k not in old)]:
            dotted = f"{where}.{key}" if where else str(key)
            if key not in new:
                lines.append(f"{dotted}: {old[key]!r} → (absent)")
            elif key not in old:
                lines.append(f"{dotted}: (absent) → {new[key]!r}")
            else:
                lines += differences(old[key], new[key], dotted)
        return lines
    return [] if old == new else [f"{where}: {old!r} → {new!r}"]


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


# Keys that are gone, and what replaced them: a params.yaml or an `-S` written for them gets told.
RETIRED_KEYS = {
    "train.preset": "presets are data now: conf/train/<name>.yaml, chosen with `dvc exp run -S train=<name>` "
                    "(cpu, paper or full), so their values are in params.yaml where `dvc params diff` shows them",
}


def reject_unknown(mapping: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if not unknown:
        return
    key = unknown[0]
    if f"{where}.{key}" in RETIRED_KEYS:
        raise ImrestoreError(f"params.yaml: {where}.{key} is retired: {RETIRED_KEYS[f'{where}.{key}']}")
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
