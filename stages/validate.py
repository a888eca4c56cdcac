"""validate@<dataset>: decode every image, write build/manifest/<dataset>.csv and the validation reports.

Stops the pipeline with every offending file and rule named when the dataset is invalid.
"""

from pathlib import Path

from imrestore.acquire.sources import SourceConfig, expected_pairs
from imrestore.data.layouts import DATASETS, layout_root
from imrestore.data.validation import ValidateConfig, validate_dataset
from imrestore.errors import ImrestoreError, exit_on_error
from imrestore.params import load_params, section, stage_argument


@exit_on_error
def main(dataset: str) -> None:
    params = load_params()
    source = SourceConfig.for_dataset(dataset, section(params, f"download.{dataset}"))
    settings = ValidateConfig.for_dataset(dataset, params.get("validate", {}).get(dataset))
    try:
        summary = validate_dataset(
            dataset,
            root=layout_root(Path("build/raw") / dataset, dataset),
            expected_pairs=settings.expected(expected_pairs(source)),
            manifest_path=Path("build/manifest") / f"{dataset}.csv",
            report_dir=Path("reports/validation") / dataset,
            gopro_input=settings.input_folder,
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
