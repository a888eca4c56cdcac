"""validate@<dataset>: decode every image, write build/manifest/<dataset>.csv and the validation reports.

Stops the pipeline with every offending file and rule named when the dataset is invalid.
"""

from pathlib import Path

from imrestore.acquire.sources import SourceConfig, expected_pairs
from imrestore.data.layouts import DATASETS, layout_root
from imrestore.data.validation import validate_dataset, validate_settings
from imrestore.errors import ImrestoreError, exit_on_error
from imrestore.params import load_params, section, stage_argument


@exit_on_error
def main(dataset: str) -> None:
    params = load_params()
    source = SourceConfig.from_params(dataset, section(params, f"download.{dataset}"))
    expected, gopro_input = validate_settings(dataset, params.get("validate", {}).get(dataset), expected_pairs(source))
    try:
        summary = validate_dataset(
            dataset,
            root=layout_root(Path("build/raw") / dataset, dataset),
            expected_pairs=expected,
            manifest_path=Path("build/manifest") / f"{dataset}.csv",
            report_dir=Path("reports/validation") / dataset,
            gopro_input=gopro_input,
        )
    except ImrestoreError as error:
        other = next(name for name in DATASETS if name != dataset)
        raise ImrestoreError(
            f"{error}\n`dvc repro` stops at the first stage that fails, so validate@{other} may not have run yet; "
            f"`dvc repro --keep-going` also runs every stage that does not depend on this one"
        ) from None
    print(f"{dataset}: {summary['pairs']} valid pairs {summary['splits']}")


if __name__ == "__main__":
    main(stage_argument(DATASETS))
