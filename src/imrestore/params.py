"""Read params.yaml the way DVC does, compose it from conf/ the way `dvc exp run` does, and parse its sections.

Stage scripts read their section here (not through `dvc.api`, which would import all of DVC for a dict).
params.yaml itself is generated: Hydra composes it from conf/config.yaml and the chosen conf/train/ preset
(.dvc/config, [hydra]), so what a preset sets is in params.yaml, where `dvc params diff` and `dvc exp show`
see it.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Self

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
    except UnicodeDecodeError as exc:
        raise ImrestoreError(f"{path} is not UTF-8 text: byte {exc.start} is {exc.object[exc.start:exc.end]!r}; "
                             "`imrestore params` composes it afresh") from None
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
    import yaml
    from dvc.config import Config
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException

    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in RETIRED_KEYS:
            raise ImrestoreError(f"-S {override}: {key} is retired: {RETIRED_KEYS[key]}")
    root = Path(root).resolve()
    if not (root / ".dvc").is_dir():
        raise ImrestoreError(f"{root} has no .dvc/: run from the repository root, where conf/ and params.yaml are")
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
        except yaml.YAMLError as exc:  # Hydra reads conf/ with PyYAML, and lets its errors through; they name the file
            raise ImrestoreError(f"{config_dir}: cannot compose params.yaml: a file there is not valid YAML: "
                                 f"{exc}") from None
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


def reject_unknown(mapping: dict[str, Any], allowed: set[str], where: str, origin: str = "params.yaml") -> None:
    """Refuse the first key of `mapping` (the section at `where`) that is not in `allowed`, listing those."""
    unknown = sorted(set(mapping) - allowed)
    if not unknown:
        return
    key = unknown[0]
    if f"{where}.{key}" in RETIRED_KEYS:
        raise ImrestoreError(f"{origin}: {where}.{key} is retired: {RETIRED_KEYS[f'{where}.{key}']}")
    if key in RENAMED_KEYS and RENAMED_KEYS[key][0] in allowed:
        new, why = RENAMED_KEYS[key]
        raise ImrestoreError(f"{origin}: {where}.{key} is now {where}.{new}: {why}")
    raise ImrestoreError(f"{origin}: unknown key {where}.{key}; expected one of {', '.join(sorted(allowed))}")


def stage_argument(choices: tuple[str, ...], name: str = "dataset") -> str:
    """The one positional argument of a foreach stage script (`python stages/x.py gopro`)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument(name, choices=choices)
    return getattr(parser.parse_args(), name)


# --------------------------------------------------------------------------------------------------------------
# Sections: every params section is parsed one way, into a frozen dataclass
# --------------------------------------------------------------------------------------------------------------
#
# A section's class declares its keys as dataclass fields, each with its rule (`param(default, rule)`,
# `required(rule)`), a section of its own (`nested`, or `inline` when its keys sit in this mapping), or a value
# the caller supplies (`given`). `from_params` rejects unknown keys (listing the allowed ones), checks every
# value, and names the key in one format: `params.yaml: a.b.c must be …, found …`. Constructing the class
# directly runs the same checks, under the section's own name, so no object exists that params.yaml could not
# have produced. Rules are data (`Rule`: what a value must be, in words and as a test), built from a few
# constructors: integer, number, choice, BOOLEAN, TEXT, either, optional, items.


def invalid(label: str, expected: str, found: Any) -> ImrestoreError:
    """The one message format: `label` names the value (`params.yaml: model.blocks`, `imrestore restore: --tile`)."""
    return ImrestoreError(f"{label} must be {expected}, found {_shown(found)}")


def _shown(value: Any) -> str:
    return "nothing" if value is _ABSENT else repr(value)


_ABSENT = object()  # a required key that params.yaml leaves out


@dataclass(frozen=True)
class Rule:
    """What one value must be. `expected` words it after "must be"; `convert` normalises what `accepts` took,
    into a form `accepts` takes again (objects built from params are checked once more when constructed)."""

    expected: str
    accepts: Callable[[Any], bool]
    convert: Callable[[Any], Any] = lambda value: value

    def parse(self, value: Any, label: str) -> Any:
        if value is _ABSENT or not self.accepts(value):
            raise invalid(label, self.expected, value)
        return self.convert(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # YAML's true is not 1


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _limits(minimum: Any = None, maximum: Any = None, above: Any = None, below: Any = None) -> str:
    words = [f"≥ {minimum}" if minimum is not None else "", f"> {above}" if above is not None else "",
             f"≤ {maximum}" if maximum is not None else "", f"< {below}" if below is not None else ""]
    return " and ".join(word for word in words if word)


def _within(value: Any, minimum: Any = None, maximum: Any = None, above: Any = None, below: Any = None) -> bool:
    return ((minimum is None or value >= minimum) and (maximum is None or value <= maximum)
            and (above is None or value > above) and (below is None or value < below))


def integer(minimum: int | None = None, maximum: int | None = None, multiple_of: int | None = None) -> Rule:
    """An integer (not a boolean) in the bounds; `multiple_of` for sizes the network's grid divides."""
    limits = _limits(minimum, maximum)
    words = f"a multiple of {multiple_of}" if multiple_of else "an integer"
    return Rule(f"{words} {limits}".strip(), lambda v: _is_int(v) and _within(v, minimum, maximum)
                and (not multiple_of or v % multiple_of == 0))


def number(minimum: float | None = None, maximum: float | None = None, above: float | None = None,
           below: float | None = None) -> Rule:
    """A finite number (an integer counts: `lr: 1` is 1.0) in the bounds, as a float."""
    limits = _limits(minimum, maximum, above, below)
    return Rule(f"a number {limits}".strip(), lambda v: _is_number(v) and _within(v, minimum, maximum, above, below),
                float)


def _yaml_word(option: Any) -> str:
    return {True: "true", False: "false", None: "null"}.get(option, repr(option)) if not _is_int(option) \
        else str(option)


def choice(*options: Any) -> Rule:
    """One of `options`, of the same type too (`true` is not `1`, `'3'` is not `3`)."""
    words = [_yaml_word(option) for option in options]
    expected = words[0] if len(words) == 1 else f"one of {', '.join(words)}"
    return Rule(expected, lambda v: any(v == o and type(v) is type(o) for o in options))


SEED = integer(minimum=0, maximum=2**32 - 1)  # what numpy's and Lightning's seeding take
BOOLEAN = Rule("true or false", lambda v: isinstance(v, bool))
TEXT = Rule("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()))


def either(*rules: Rule) -> Rule:
    """The first of `rules` that accepts the value decides (and converts) it."""
    def convert(value: Any) -> Any:
        return next(rule for rule in rules if rule.accepts(value)).convert(value)

    return Rule(" or ".join(rule.expected for rule in rules), lambda v: any(r.accepts(v) for r in rules), convert)


def optional(rule: Rule) -> Rule:
    """null (None) or what `rule` accepts."""
    return either(choice(None), rule)


def items(rule: Rule, what: str, nonempty: bool = False) -> Rule:
    """A YAML list whose every item `rule` accepts, as a tuple; `what` names the items in messages."""
    return Rule(f"a{' non-empty' if nonempty else ''} list of {what}",
                lambda v: isinstance(v, (list, tuple)) and (bool(v) or not nonempty) and all(map(rule.accepts, v)),
                lambda v: tuple(rule.convert(item) for item in v))


def param(default: Any, rule: Rule) -> Any:
    """A section key with its default and rule (a mapping or list default is copied for each object)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"rule": rule})
    return field(default=default, metadata={"rule": rule})


def required(rule: Rule) -> Any:
    """A section key that has no default: params.yaml must set it."""
    return field(metadata={"rule": rule})


def nested(section: type[Section]) -> Any:
    """A key whose value is a section of its own (`model.nafnet`), parsed by that class under `where.key`."""
    return field(default_factory=section, metadata={"section": section})


def inline(section: type[Section]) -> Any:
    """A section whose keys sit in this one's mapping (`evaluate.tile` is an inference key), parsed by its class."""
    return field(default_factory=section, metadata={"section": section, "inline": True})


def given(default: Any = MISSING) -> Any:
    """Not a params key: the caller supplies it (the dataset a `download.<ds>` section is for)."""
    return field(default=default, metadata={"given": True})


class Section:
    """Base of the frozen dataclasses that params sections parse into; see the comment above."""

    SECTION: ClassVar[str] = ""  # where the section lives in params.yaml, for messages

    @classmethod
    def keys(cls) -> set[str]:
        """The keys params.yaml may set in this section."""
        own = {f.name for f in fields(cls) if not f.metadata.get("given") and not f.metadata.get("inline")}
        return own.union(*(f.metadata["section"].keys() for f in fields(cls) if f.metadata.get("inline")))

    @classmethod
    def from_params(cls, mapping: Any, where: str | None = None, *, origin: str = "params.yaml",
                    label: Callable[[str], str] | None = None, **supplied: Any) -> Self:
        """The section from its mapping (None: every default); `supplied` fills the `given` fields.

        Messages name a key `<origin>: <where>.<key>` (origin: the file the mapping came from), or `label(key)`
        when the values came from somewhere else (command-line flags)."""
        where = cls.SECTION if where is None else where
        label = label or (lambda key: f"{origin}: {where}.{key}")
        if mapping is None:
            mapping = {}
        if not isinstance(mapping, Mapping):
            raise invalid(f"{origin}: {where}", f"a mapping of {', '.join(sorted(cls.keys()))}", mapping)
        reject_unknown(dict(mapping), cls.keys(), where, origin)
        values: dict[str, Any] = {}
        for item in fields(cls):
            if item.metadata.get("given") and item.name in supplied:
                values[item.name] = supplied[item.name]
            elif item.metadata.get("given") and item.default is MISSING:
                raise TypeError(f"{cls.__name__}.from_params needs {item.name}=…")
            elif item.metadata.get("inline"):
                section = item.metadata["section"]
                values[item.name] = section.from_params({key: mapping[key] for key in section.keys() if key in mapping},
                                                        where, origin=origin, label=label)
            elif item.name in mapping and "section" in item.metadata:
                values[item.name] = item.metadata["section"].from_params(mapping[item.name], f"{where}.{item.name}",
                                                                         origin=origin)
            elif item.name in mapping and not item.metadata.get("given"):
                values[item.name] = mapping[item.name]
            elif item.default is not MISSING:
                values[item.name] = item.default
            elif item.default_factory is not MISSING:
                values[item.name] = item.default_factory()
            else:
                values[item.name] = _ABSENT
        return cls(**cls._checked(values, label))

    @classmethod
    def _checked(cls, values: dict[str, Any], label: Callable[[str], str]) -> dict[str, Any]:
        """`values` with every rule applied (converted), then the cross-key checks of `check_consistency`."""
        checked = dict(values)
        for item in fields(cls):
            if item.name in checked and "rule" in item.metadata:
                checked[item.name] = item.metadata["rule"].parse(checked[item.name], label(item.name))

        def fail(key: str, expected: str) -> None:
            raise invalid(label(key), expected, values[key])  # as the user wrote it: [1], not (1,)

        cls.check_consistency(checked, fail)
        return checked

    @classmethod
    def check_consistency(cls, values: dict[str, Any], fail: Callable[[str, str], None]) -> None:
        """Checks that span keys (every key is in `values`, already checked alone); `fail(key, expected)` refuses
        `values[key]`."""

    def __post_init__(self) -> None:
        # Built directly (`ModelConfig(blocks=0)`), not from params: the same checks, named by the section.
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in type(self)._checked(values, lambda key: f"params.yaml: {self.SECTION}.{key}").items():
            if value is not values[name]:
                object.__setattr__(self, name, value)  # the converted form: a tuple for a list, a float for 1
