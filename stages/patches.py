"""patches@<dataset>: cut aligned input/target crops of the train (and val) subsets into a patch cache.

Reads build/splits/<dataset>.csv and the images it names; writes build/patches/<dataset>/ (memory-mappable
uint8 arrays + index + cache.json). Test images stay whole for full-resolution evaluation.
"""

from pathlib import Path

from imrestore.atomic import sha256_file
from imrestore.data.layouts import DATASETS
from imrestore.data.manifest import read_manifest
from imrestore.data.patches import PatchGeometry, build_patch_cache
from imrestore.errors import exit_on_error
from imrestore.params import load_params, section, stage_argument


@exit_on_error
def main(dataset: str) -> None:
    settings = section(load_params(), f"patches.{dataset}")
    geometry = PatchGeometry.for_dataset(dataset, settings)
    split_path = Path("build/splits") / f"{dataset}.csv"
    table = read_manifest(split_path)
    subsets = [s for s in ("train", "val") if s == "train" or (table["subset"] == s).any()]
    meta = build_patch_cache(table, Path("build/patches") / dataset, **geometry.keywords(), subsets=subsets,
                             params=settings, split_sha256=sha256_file(split_path))
    counts = {name: info["count"] for name, info in meta["subsets"].items()}
    print(f"{dataset}: {counts} patches of {geometry.crop_size}²")


if __name__ == "__main__":
    main(stage_argument(DATASETS))
