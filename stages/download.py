"""download@<dataset>: materialise the raw dataset in its upstream layout under build/raw/<dataset>/.

Reads download.<dataset> from params.yaml: `source` is `sample` (synthesized from data/sample_photos), a URL
or a local archive/folder; `sha256` pins any archive.
"""

from pathlib import Path

from imrestore.acquire.sources import SourceConfig, acquire
from imrestore.data.layouts import DATASETS
from imrestore.errors import exit_on_error
from imrestore.params import load_params, section, stage_argument


@exit_on_error
def main(dataset: str) -> None:
    config = SourceConfig.for_dataset(dataset, section(load_params(), f"download.{dataset}"))
    root = acquire(config, Path("build/raw") / dataset)
    print(f"{dataset}: {config.kind} source ready at {root}")


if __name__ == "__main__":
    main(stage_argument(DATASETS))
