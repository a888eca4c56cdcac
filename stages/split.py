"""split@<dataset>: assign every validated pair to train/val/test and check that nothing leaks across.

Writes build/splits/<dataset>.csv (the manifest plus `subset`) and reports/splits/<dataset>.json (counts).
"""

from pathlib import Path

from imrestore import atomic
from imrestore.data.layouts import DATASETS
from imrestore.data.manifest import read_manifest
from imrestore.data.split import SplitConfig, assign_subsets, check_leakage, split_summary
from imrestore.errors import exit_on_error
from imrestore.params import load_params, stage_argument


@exit_on_error
def main(dataset: str) -> None:
    config = SplitConfig.for_dataset(dataset, load_params().get("split", {}).get(dataset))
    table = assign_subsets(read_manifest(Path("build/manifest") / f"{dataset}.csv"), dataset, config)
    check_leakage(table)
    summary = split_summary(table, dataset, config)
    with atomic.atomic_file(Path("build/splits") / f"{dataset}.csv") as tmp:
        table.to_csv(tmp, index=False)
    atomic.write_json(Path("reports/splits") / f"{dataset}.json", summary)
    print(f"{dataset}: {summary['pairs']} pairs in {summary['groups']} groups by {summary['group_by']}")
    if summary.get("shared_scenes"):
        print(f"note: {summary['shared_scenes']} scenes appear in more than one subset (group_by: instance)")


if __name__ == "__main__":
    main(stage_argument(DATASETS))
