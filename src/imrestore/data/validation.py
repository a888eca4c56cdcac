"""Check a manifest two ways, each where it fits, and report every offending file with the rule it broke.

- pandera (`PairManifest` and its per-dataset subclasses): row-level facts — types, complete pairs, images that
  decode, 8-bit RGB, equal input/target sizes, unique pair ids.
- Great Expectations: dataset-level expectations — pairs per split, camera/ISO value sets, no content shared
  between pairs, input differs from target, plausible intensity statistics. Its Data Docs give a browsable
  HTML report next to the JSON summary.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from imrestore import atomic
from imrestore.data.layouts import DATASETS, GOPRO_SPLITS, SIDD_BRIGHTNESS, SIDD_CAMERAS, list_pairs
from imrestore.data.manifest import build_manifest
from imrestore.errors import ImrestoreError
from imrestore.params import Rule, Section, choice, param

# Every ISO stop a phone camera reports (third stops, 50..12800); SIDD's values are among them.
ISO_STOPS = (50, 64, 80, 100, 125, 160, 200, 250, 320, 400, 500, 640, 800, 1000, 1250, 1600, 2000, 2500, 3200,
             4000, 5000, 6400, 8000, 10000, 12800)
SIDD_ILLUMINANTS_K = (3200, 4400, 5500)
# Blur and noise move pixels, not the exposure; clipping of strong noise in dark regions shifts the mean by
# up to ~15 levels at ISO 10000, so only a larger shift points to a mismatched pair.
MAX_MEAN_SHIFT = 20.0


@dataclass(frozen=True)
class Problem:
    file: str
    rule: str
    found: str

    def __str__(self) -> str:
        return f"{self.file}: {self.rule} (found {self.found})"


class PairManifest(pa.DataFrameModel):
    """Row-level rules every dataset's manifest obeys."""

    dataset: Series[str] = pa.Field(isin=DATASETS)
    pair_id: Series[str] = pa.Field(unique=True)
    split: Series[str]
    group: Series[str]
    input_path: Series[str] = pa.Field(nullable=False)
    target_path: Series[str] = pa.Field(nullable=False)
    input_error: Series[str] = pa.Field(isin=[""])
    target_error: Series[str] = pa.Field(isin=[""])
    input_width: Series[int] = pa.Field(gt=0)
    input_height: Series[int] = pa.Field(gt=0)
    target_width: Series[int] = pa.Field(gt=0)
    target_height: Series[int] = pa.Field(gt=0)
    input_channels: Series[int] = pa.Field(eq=3)
    target_channels: Series[int] = pa.Field(eq=3)
    input_bit_depth: Series[int] = pa.Field(eq=8)
    target_bit_depth: Series[int] = pa.Field(eq=8)
    input_sha256: Series[str] = pa.Field(str_length={"min_value": 64, "max_value": 64})
    target_sha256: Series[str] = pa.Field(str_length={"min_value": 64, "max_value": 64})

    @pa.dataframe_check(error="input and target sizes differ")
    def same_size(cls, df: pd.DataFrame) -> pd.Series:
        # A missing or undecodable file has no size (0x0); its own rule reports it, so it is not compared here.
        unread = (df["input_error"] != "") | (df["target_error"] != "")
        return unread | ((df["input_width"] == df["target_width"]) & (df["input_height"] == df["target_height"]))

    class Config:
        strict = False  # dataset subclasses add their metadata columns


class GoproManifest(PairManifest):
    split: Series[str] = pa.Field(isin=list(GOPRO_SPLITS))
    sequence: Series[str]
    frame: Series[str]


class SiddManifest(PairManifest):
    scene_instance: Series[str] = pa.Field(unique=False)
    scene: Series[int] = pa.Field(ge=0)
    camera: Series[str]
    iso: Series[int] = pa.Field(gt=0)
    shutter: Series[int] = pa.Field(gt=0)
    illuminant_k: Series[int] = pa.Field(gt=0)
    brightness: Series[str] = pa.Field(isin=list(SIDD_BRIGHTNESS))


SCHEMAS: dict[str, type[PairManifest]] = {"gopro": GoproManifest, "sidd": SiddManifest}

_RULES = {
    "input_path": "has no input partner",
    "target_path": "has no target partner",
    "input_error": "input must be a readable, fully decodable image",
    "target_error": "target must be a readable, fully decodable image",
    "input_channels": "input must be RGB (3 channels)",
    "target_channels": "target must be RGB (3 channels)",
    "input_bit_depth": "input must have 8 bits per channel",
    "target_bit_depth": "target must have 8 bits per channel",
    "pair_id": "pair ids must be unique",
}


def check_schema(manifest: pd.DataFrame, dataset: str) -> list[Problem]:
    """Row-level (pandera) problems, one per offending file and rule."""
    try:
        SCHEMAS[dataset].validate(manifest, lazy=True)
        return []
    except pa.errors.SchemaErrors as errors:
        failures = errors.failure_cases
    problems: dict[tuple[str, str], Problem] = {}
    for failure in failures.itertuples(index=False):
        row = None if pd.isna(failure.index) else manifest.loc[failure.index]
        column = str(failure.column)
        if failure.schema_context == "DataFrameSchema":
            # A pair-level check fails once for every column of the row: name the pair once, by its input.
            role, rule, found = "input", str(failure.check), _sizes(row)
        else:
            role = "target" if column.startswith("target_") else "input"
            if _reported_elsewhere(row, column, role):
                continue
            rule, found = _RULES.get(column, f"{column} must satisfy {failure.check}"), _found(failure.failure_case)
        problems.setdefault((_file_of(row, role), rule), Problem(_file_of(row, role), rule, found))
    return list(problems.values())


def _reported_elsewhere(row: pd.Series | None, column: str, role: str) -> bool:
    """Whether a failure of `column` follows from one that another rule reports, so each cause is named once:
    a missing file by its path rule (not again as unreadable), an unreadable one by its error rule (not again
    as having no width, depth or hash)."""
    if row is None or column == f"{role}_path":
        return False
    if not isinstance(row[f"{role}_path"], str):
        return True
    return column != f"{role}_error" and bool(row[f"{role}_error"])


def _file_of(row: pd.Series | Mapping[str, Any] | None, role: str) -> str:
    if row is None:
        return "<manifest>"
    other = "target" if role == "input" else "input"
    for column in (f"{role}_path", f"{other}_path"):
        if isinstance(row[column], str):
            return row[column]
    return str(row["pair_id"])


def _sizes(row: pd.Series | None) -> str:
    if row is None:
        return "?"
    return (f"input {row['input_width']}x{row['input_height']}, "
            f"target {row['target_width']}x{row['target_height']}")


def _found(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "nothing"
    return str(value)


def expectation_suite(dataset: str, expected_pairs: dict[str, int]) -> list[tuple[str, object]]:
    """Dataset-level expectations: a list of (table, expectation) where table is "pairs" or "splits"."""
    import great_expectations.expectations as gxe  # imported late: GX takes seconds to import
    from great_expectations.expectations.row_conditions import Column

    def described(expectation, description: str):
        expectation.description = description
        return expectation

    splits = [
        ("splits", described(gxe.ExpectColumnDistinctValuesToEqualSet(column="split", value_set=list(expected_pairs)),
                             f"the splits are exactly {', '.join(expected_pairs)}")),
    ]
    for split, count in expected_pairs.items():
        splits.append(("splits", described(
            gxe.ExpectColumnValuesToBeBetween(column="pairs", min_value=count, max_value=count,
                                              row_condition=Column("split") == split),
            f"expected {count} pairs, as validate.{dataset}.expected_pairs says")))
    pairs = [
        gxe.ExpectColumnValuesToBeUnique(column="input_sha256",
                                         description="no two pairs share the same input content"),
        gxe.ExpectColumnValuesToBeUnique(column="target_sha256",
                                         description="no two pairs share the same target content"),
        gxe.ExpectColumnValuesToBeBetween(column="input_target_mae", min_value=0, strict_min=True,
                                          description="the input differs from its target"),
        gxe.ExpectColumnValuesToBeBetween(column="input_mean", min_value=2, max_value=253,
                                          description="input mean intensity is plausible (not blank or saturated)"),
        gxe.ExpectColumnValuesToBeBetween(column="target_mean", min_value=2, max_value=253,
                                          description="target mean intensity is plausible (not blank or saturated)"),
        gxe.ExpectColumnValuesToBeBetween(column="mean_shift", min_value=-MAX_MEAN_SHIFT, max_value=MAX_MEAN_SHIFT,
                                          description=f"input and target mean intensities agree within {MAX_MEAN_SHIFT:g} levels"),
        gxe.ExpectColumnMeanToBeBetween(column="target_mean", min_value=20, max_value=235,
                                        description="the dataset's mean intensity is plausible"),
    ]
    if dataset == "sidd":
        pairs += [
            gxe.ExpectColumnValuesToBeInSet(column="camera", value_set=list(SIDD_CAMERAS),
                                            description=f"camera is one of SIDD's {', '.join(SIDD_CAMERAS)}"),
            gxe.ExpectColumnValuesToBeInSet(column="iso", value_set=list(ISO_STOPS),
                                            description="ISO is a standard ISO stop"),
            gxe.ExpectColumnValuesToBeInSet(column="illuminant_k", value_set=list(SIDD_ILLUMINANTS_K),
                                            description="illuminant is one of SIDD's 3200/4400/5500 K"),
        ]
    return splits + [("pairs", e) for e in pairs]


def check_expectations(manifest: pd.DataFrame, dataset: str, expected_pairs: dict[str, int],
                       docs_dir: Path) -> tuple[list[Problem], dict[str, int]]:
    """Run the Great Expectations suite, write Data Docs to `docs_dir`, and return problems + counts."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no network calls from a validation step
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    site = {"class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}}
    context = gx.get_context(mode="ephemeral", project_config=DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False, progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={"imrestore": site}))
    tables = {
        "pairs": _content_table(manifest),
        "splits": manifest.groupby("split").size().rename("pairs").reset_index(),
    }
    index_columns = {"pairs": ["input_path", "target_path"], "splits": ["split"]}
    source = context.data_sources.add_pandas(f"{dataset}_manifest")
    run_id = _reproducible_run_id(manifest)
    suite_items = expectation_suite(dataset, expected_pairs)
    problems, evaluated, successful = [], 0, 0
    for table, frame in tables.items():
        suite = context.suites.add(gx.ExpectationSuite(name=f"{dataset}_{table}"))
        for name, expectation in suite_items:
            if name == table:
                suite.add_expectation(expectation)
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{dataset}_{table}", data=batch, suite=suite))
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=f"{dataset}_{table}", validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": index_columns[table]}))
        run = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id)
        for result in (r for v in run.run_results.values() for r in v.results):
            evaluated += 1
            successful += bool(result.success)
            if not result.success:
                problems += _expectation_problems(result, table, frame)
    _make_docs_reproducible(docs_dir)
    return problems, {"evaluated": evaluated, "successful": successful}


def _content_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """The pairs table the content expectations check. A file that is missing or did not decode has no content
    (its rule in the schema names it), so its hash is null, which GX's column checks skip: otherwise the empty
    hashes of every missing file would count as content shared between pairs."""
    hashes = {f"{role}_sha256": manifest[f"{role}_sha256"].where(manifest[f"{role}_error"] == "")
              for role in ("input", "target")}
    return manifest.assign(mean_shift=manifest["input_mean"] - manifest["target_mean"], **hashes)


# The Data Docs are a stage output, so dvc.lock records their hash: the same manifest must give the same bytes,
# or every `dvc repro` (and every fresh clone's) would leave dvc.lock modified. GX stamps each run with the wall
# clock (the run, the batch's ge_load_time, the logo's cache-buster) and gives collapsible sections random uuid4
# ids. Here the run is named after the manifest it checked, every stamp reads the Unix epoch (the
# reproducible-builds convention; when the stage ran is in git's history of dvc.lock), and each page's ids are
# numbered in order of appearance.
_EPOCH = datetime.datetime.fromtimestamp(0, datetime.timezone.utc)
_EPOCH_STAMP = _EPOCH.strftime("%Y%m%dT%H%M%S.%fZ")  # GX's compact form, as in its run folders
_GX_STAMP = re.compile(r"\b\d{8}T\d{6}\.\d{6}Z\b")
_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def _reproducible_run_id(manifest: pd.DataFrame):
    from great_expectations.core.run_identifier import RunIdentifier

    digest = hashlib.sha256(manifest.to_csv(index=False).encode()).hexdigest()[:12]
    return RunIdentifier(run_name=f"manifest-{digest}", run_time=_EPOCH)


def _make_docs_reproducible(docs_dir: Path) -> None:
    for page in docs_dir.rglob("*.html"):
        text = _GX_STAMP.sub(_EPOCH_STAMP, page.read_text(encoding="utf-8"))
        ids: dict[str, str] = {}
        text = _UUID4.sub(lambda m: ids.setdefault(m.group(0), str(uuid.UUID(int=len(ids) + 1))), text)
        page.write_text(text, encoding="utf-8")


def _expectation_problems(result, table: str, frame: pd.DataFrame) -> list[Problem]:
    config = result.expectation_config
    rule = config.description or config.type
    column = config.kwargs.get("column")
    details = result.result or {}
    unexpected = details.get("unexpected_index_list") or []
    if unexpected and isinstance(unexpected[0], dict):
        if table == "splits":
            return [Problem(f"split {item['split']}", rule, _found(item.get(column))) for item in unexpected]
        role = "target" if column.startswith("target_") else "input"
        return [Problem(_file_of(item, role), rule, _found(item.get(column))) for item in unexpected]
    observed = details.get("observed_value", details.get("unexpected_list", "?"))
    return [Problem(f"<{table}>", rule, _found(observed))]


def summarize(manifest: pd.DataFrame, dataset: str, problems: list[Problem], expectations: dict[str, int]) -> dict:
    """The JSON summary DVC tracks as metrics for the validate stage."""
    megapixels = (manifest["input_width"] * manifest["input_height"]).sum() / 1e6
    summary: dict[str, object] = {
        "dataset": dataset,
        "valid": not problems,
        "pairs": int(len(manifest)),
        "splits": {str(k): int(v) for k, v in manifest.groupby("split").size().items()},
        "input_megapixels": round(float(megapixels), 3),
        "width": [int(manifest["input_width"].min()), int(manifest["input_width"].max())],
        "height": [int(manifest["input_height"].min()), int(manifest["input_height"].max())],
        "mean_input_target_mae": round(float(manifest["input_target_mae"].mean()), 4),
        "expectations": expectations,
        "problems": len(problems),
    }
    if dataset == "sidd":
        for column in ("camera", "iso", "brightness"):
            summary[column] = {str(k): int(v) for k, v in manifest[column].value_counts().sort_index().items()}
    return summary


MAX_PROBLEMS_SHOWN = 40


def validate_dataset(dataset: str, root: Path, expected_pairs: dict[str, int] | None, manifest_path: Path,
                     report_dir: Path, gopro_input: str = "blur", workers: int | None = None) -> dict:
    """Build and check the manifest of the dataset at `root`; write the reports, and the manifest if valid.

    The reports (summary JSON and Data Docs) are written either way so a failed run can be inspected; the
    manifest, which later stages read, only exists for a valid dataset. `expected_pairs=None` expects the
    pairs that are there: the files are checked, not the counts.
    """
    manifest = build_manifest(list_pairs(root, dataset, gopro_input), dataset, workers)
    if manifest.empty:
        raise ImrestoreError(f"no image pairs found under {root}")
    if expected_pairs is None:
        expected_pairs = {str(k): int(v) for k, v in manifest.groupby("split").size().items()}
    problems = check_schema(manifest, dataset)
    with atomic.atomic_dir(report_dir / "data_docs") as docs:
        expectation_problems, counts = check_expectations(manifest, dataset, expected_pairs, docs)
    problems += expectation_problems
    summary = summarize(manifest, dataset, problems, counts)
    summary["problem_details"] = [str(p) for p in problems]
    atomic.write_json(report_dir / "summary.json", summary)
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:MAX_PROBLEMS_SHOWN])
        more = len(problems) - MAX_PROBLEMS_SHOWN
        raise ImrestoreError(
            f"{dataset} at {root} is invalid: {len(problems)} problem(s)\n{shown}"
            + (f"\n  … and {more} more" if more > 0 else "")
            + f"\nFull list: {report_dir / 'summary.json'}; report: {report_dir / 'data_docs' / 'index.html'}"
        )
    with atomic.atomic_file(manifest_path) as tmp:
        manifest.to_csv(tmp, index=False)
    return summary


COUNTS_PER_SPLIT = Rule("'auto' or a mapping split → positive count",
                        lambda v: v == "auto" or (isinstance(v, Mapping) and bool(v) and all(
                            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in v.values())),
                        lambda v: v if v == "auto" else {str(split): n for split, n in v.items()})


@dataclass(frozen=True)
class ValidateConfig(Section):
    """The `validate.<dataset>` section: how many pairs to expect, and which GoPro folder is the input."""

    SECTION = "validate"

    expected_pairs: str | dict[str, int] = param("auto", COUNTS_PER_SPLIT)  # auto: what the source says
    input_folder: str = param("blur", choice("blur", "blur_gamma"))  # GoPro: sRGB-averaged or linear-light blur

    @classmethod
    def for_dataset(cls, dataset: str, section: Any) -> ValidateConfig:
        return cls.from_params(section, f"validate.{dataset}")

    def expected(self, official: dict[str, int]) -> dict[str, int]:
        """Pairs per split to expect: the configured counts, or `official` (the source's) for `auto`."""
        return dict(official) if self.expected_pairs == "auto" else dict(self.expected_pairs)
