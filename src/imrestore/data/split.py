"""Train/val/test assignment, grouped so that nothing seen in training leaks into evaluation.

- GoPro keeps its official train/test split untouched; a validation subset may be carved from train.
- SIDD is split 80:20 by default **grouped by scene**: all instances of a scene land on one side, because
  instances of one scene are the same image content under other noise, and a network that saw them in
  training is partly tested on memorised content. `group_by: instance` reproduces the paper's split of scene
  instances. Among the candidate splits closest to the requested fraction, the one that keeps the most cameras
  and ISO levels represented on both sides wins; the seed decides the candidates, so the split is
  deterministic.
- GoPro's sequences carry no metadata about their degradation, so there the measured one stands in for it:
  among candidates equally close to the fraction, the one whose mean input–target difference
  (`input_target_mae` of the manifest) is most like the rest's wins. A held-out subset that is barely
  degraded measures nothing: the sample's GoPro-like val sequence once had a quarter of the train
  sequences' blur, and its val PSNR fell while the network learned.
- A leakage check runs on the result: no group and no identical image content on two sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from imrestore.errors import ImrestoreError
from imrestore.params import SEED, Section, choice, number, param, reject_unknown

SUBSETS = ("train", "val", "test")
GROUP_BY = {"scene": "group", "instance": "scene_instance"}  # manifest column that holds each grouping
CANDIDATES = 4000  # random group orders tried per split; plenty for SIDD's 10 scenes or 160 instances


@dataclass(frozen=True)
class SplitConfig(Section):
    """The `split.<dataset>` section. GoPro keeps its official test set, so only `seed` and `val_fraction` apply
    to it; SIDD has no official split, and all four do."""

    SECTION = "split"

    seed: int = param(0, SEED)
    # A test subset is what evaluate measures: 0 would leave it empty, found only after both models trained.
    test_fraction: float = param(0.2, number(above=0, below=1))
    val_fraction: float = param(0.0, number(minimum=0, below=1))  # 0: no val subset (training runs without one)
    group_by: str = param("scene", choice(*GROUP_BY))

    @classmethod
    def for_dataset(cls, dataset: str, section: Any) -> SplitConfig:
        where = f"split.{dataset}"
        if dataset == "gopro" and isinstance(section, dict):  # the official split decides the rest
            reject_unknown(section, {"seed", "val_fraction"}, where)
        return cls.from_params(section, where)


def iso_level(iso: int) -> str:
    """Coarse ISO classes, so 'represented on both sides' means something with a handful of scenes."""
    return "low" if iso < 400 else "medium" if iso < 1600 else "high"


def assign_subsets(manifest: pd.DataFrame, dataset: str, config: SplitConfig) -> pd.DataFrame:
    """The manifest plus `subset` (train/val/test) and `split_group` (what must not straddle subsets)."""
    table = manifest.copy()
    group_column = GROUP_BY[config.group_by] if dataset == "sidd" else "group"
    table["split_group"] = table[group_column].astype(str)
    rng = np.random.default_rng([config.seed, 0x5EED])
    if dataset == "gopro":
        table["subset"] = table["split"]  # the official split, untouched
    else:
        table["subset"] = "train"
        _carve(table, "test", dataset, config, rng)
    if config.val_fraction > 0:
        _carve(table, "val", dataset, config, rng)
    if (table["subset"] == "train").sum() == 0:
        raise ImrestoreError(f"{dataset}: the split leaves no training pairs; lower test_fraction/val_fraction")
    return table


def _carve(table: pd.DataFrame, subset: str, dataset: str, config: SplitConfig, rng: np.random.Generator) -> None:
    """Move whole groups holding about `<subset>_fraction` of the train pairs to `subset`, in place."""
    train = table[table["subset"] == "train"]
    groups = sorted(train["split_group"].unique())
    if len(groups) < 2:
        raise ImrestoreError(_too_few_groups(table, subset, groups, dataset, config))
    chosen = _choose_groups(train, getattr(config, f"{subset}_fraction"), rng)
    table.loc[table["split_group"].isin(chosen), "subset"] = subset


def _too_few_groups(table: pd.DataFrame, subset: str, groups: list[str], dataset: str, config: SplitConfig) -> str:
    """Why `subset` cannot be carved from the train `groups` (fewer than two), and which keys would make room."""
    key = f"split.{dataset}"
    total = table["split_group"].nunique()
    kind = "train sequence" if dataset == "gopro" else f"{config.group_by} group"
    source = f"{len(groups)} {kind}(s) {groups}"
    fixes = []
    if subset == "val" and dataset == "sidd":
        source += f" that the test subset ({key}.test_fraction: {config.test_fraction:g}) left of {total}"
        if total > 2:  # the test subset takes at least one group: only with three can it leave two
            fixes.append(f"lower {key}.test_fraction")
    if subset == "val":
        fixes.append(f"set {key}.val_fraction: 0 (no val subset)")
    if dataset == "sidd" and config.group_by == "scene":
        instances = table["scene_instance"].nunique()
        if instances >= (3 if subset == "val" else 2):
            fixes.append(f"set {key}.group_by: instance ({instances} groups)")
    fraction = getattr(config, f"{subset}_fraction")
    return (f"{key}: cannot carve the {subset} subset ({key}.{subset}_fraction: {fraction:g}) from {source}: "
            "a grouped split needs at least two, one for each side; "
            + (" or ".join(fixes) if fixes else "no split key can fix that, the dataset has too few groups"))


def _choose_groups(table: pd.DataFrame, fraction: float, rng: np.random.Generator) -> set[str]:
    """Groups holding about `fraction` of the pairs (at least one group, never all) that best preserve coverage.

    Each candidate takes groups in a random order while that brings the count closer to the target; the
    candidate with the best (coverage, closeness, degradation likeness) wins, the first one found on ties.
    """
    sizes = table.groupby("split_group").size().to_dict()
    groups = sorted(sizes)
    values = _values_per_group(table)
    degradation = {} if any(values.values()) else _degradation_per_group(table)  # metadata first, see above
    target = fraction * len(table)
    best, best_score = set(), None
    for _ in range(CANDIDATES):
        chosen, count = [], 0
        for group in rng.permutation(groups)[: len(groups) - 1]:  # never every group
            if chosen and abs(count + sizes[group] - target) >= abs(count - target):
                break
            chosen.append(group)
            count += sizes[group]
        score = (_coverage(values, set(chosen)), -abs(count - target), -_degradation_gap(degradation, set(chosen)))
        if best_score is None or score > best_score:
            best, best_score = set(chosen), score
    return best


def _values_per_group(table: pd.DataFrame) -> dict[str, set[tuple[str, str]]]:
    """The (kind, value) pairs each group holds: cameras and ISO levels for SIDD, nothing for GoPro."""
    if "camera" not in table:
        return {group: set() for group in table["split_group"].unique()}
    tagged = pd.DataFrame({
        "split_group": table["split_group"],
        "camera": "camera:" + table["camera"].astype(str),
        "iso": "iso:" + table["iso"].map(iso_level),
    })
    return {group: set(rows["camera"]) | set(rows["iso"]) for group, rows in tagged.groupby("split_group")}


def _coverage(values: dict[str, set], chosen: set[str]) -> int:
    """How many camera / ISO-level values appear on both sides of the split."""
    inside = set().union(*(values[g] for g in chosen)) if chosen else set()
    outside = set().union(*(v for g, v in values.items() if g not in chosen))
    return len(inside & outside)


def _degradation_per_group(table: pd.DataFrame) -> dict[str, tuple[float, int]]:
    """(summed input–target MAE, pairs) per group; empty when the manifest has no such column."""
    if "input_target_mae" not in table:
        return {}
    sums = table.groupby("split_group")["input_target_mae"].agg(["sum", "size"])
    return {str(group): (float(row["sum"]), int(row["size"])) for group, row in sums.iterrows()}


def _degradation_gap(degradation: dict[str, tuple[float, int]], chosen: set[str]) -> float:
    """|mean MAE of the chosen groups − mean MAE of the others| / the others' mean (0 without the column)."""
    if not degradation:
        return 0.0
    inside = [v for g, v in degradation.items() if g in chosen]
    outside = [v for g, v in degradation.items() if g not in chosen]
    mean = lambda parts: sum(s for s, _ in parts) / max(1, sum(n for _, n in parts))  # noqa: E731
    return abs(mean(inside) - mean(outside)) / max(mean(outside), 1e-12)


def check_leakage(table: pd.DataFrame) -> None:
    """Raise, naming the offending pairs, when a group or an image's content appears in two subsets."""
    problems = []
    spread = table.groupby("split_group")["subset"].nunique()
    for group in spread[spread > 1].index:
        rows = table[table["split_group"] == group]
        sides = ", ".join(f"{s}: {', '.join(rows[rows['subset'] == s]['pair_id'][:3])}" for s in sorted(set(rows["subset"])))
        problems.append(f"group {group} is in {len(set(rows['subset']))} subsets ({sides})")
    for column in ("input_sha256", "target_sha256"):
        spread = table.groupby(column)["subset"].nunique()
        for digest in spread[spread > 1].index:
            rows = table[table[column] == digest]
            pairs = ", ".join(f"{p} ({s})" for p, s in zip(rows["pair_id"], rows["subset"]))
            problems.append(f"identical {column.split('_')[0]} content ({digest[:12]}…) in {pairs}")
    if problems:
        raise ImrestoreError("the split leaks between subsets:\n" + "\n".join(f"  - {p}" for p in problems))


def split_summary(table: pd.DataFrame, dataset: str, config: SplitConfig) -> dict:
    """Counts per subset (and per camera / ISO level for SIDD): the metrics DVC tracks for the split stage."""
    summary: dict[str, object] = {
        "dataset": dataset,
        "group_by": config.group_by if dataset == "sidd" else "sequence",
        "pairs": {s: int((table["subset"] == s).sum()) for s in SUBSETS},
        "groups": {s: int(table.loc[table["subset"] == s, "split_group"].nunique()) for s in SUBSETS},
    }
    if dataset == "sidd":
        # Nonzero only with group_by: instance (the paper's protocol): the same scenes on both sides.
        summary["shared_scenes"] = int((table.groupby("group")["subset"].nunique() > 1).sum())
        for name, values in (("camera", table["camera"]), ("iso_level", table["iso"].map(iso_level))):
            counts = pd.crosstab(values, table["subset"])
            summary[name] = {str(k): {s: int(counts.at[k, s]) if s in counts else 0 for s in SUBSETS}
                             for k in counts.index}
    return summary

