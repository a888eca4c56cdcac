"""Patch caches built from tiny real PNG pairs: BasicSR's crop grid, exact round trips, and every way a cache or
its inputs can be wrong named in the error."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imrestore.errors import ImrestoreError
from imrestore.data.patches import (
    INDEX_COLUMNS,
    PatchCache,
    array_file,
    build_patch_cache,
    crop_positions,
    index_file,
    plan_patches,
)
from layout_builders import degraded, natural_image, save_png

SIZE, STEP = 16, 8
# (width, height) of each pair: two sizes, so the plan mixes grids; 70 leaves a remainder along x, 48 fits exactly
SIZES = {"train": [(70, 48), (70, 48), (40, 24)], "val": [(32, 16)], "test": [(70, 48)]}


def basicsr_positions(length: int, size: int, step: int, thresh_size: int) -> list[int]:
    """BasicSR's extract_subimages loop bounds (scripts/data_preparation/extract_subimages.py), verbatim."""
    space = np.arange(0, length - size + 1, step)
    if length - (space[-1] + size) > thresh_size:
        space = np.append(space, length - size)
    return space.tolist()


def write_split(root, sizes=SIZES) -> pd.DataFrame:
    """Real PNG pairs under root/raw and their split table, with paths relative to root (the working dir)."""
    rows, seed = [], 0
    for subset, shapes in sizes.items():
        for width, height in shapes:
            seed += 1
            sharp = natural_image(seed, width, height)
            target = save_png(root / "raw" / subset / f"{seed:03d}_sharp.png", sharp)
            source = save_png(root / "raw" / subset / f"{seed:03d}_blur.png", degraded(sharp, seed))
            rows.append({"pair_id": f"{subset}-{seed:03d}", "input_path": source.relative_to(root).as_posix(),
                         "target_path": target.relative_to(root).as_posix(), "input_width": width,
                         "input_height": height, "subset": subset})
    return pd.DataFrame(rows)


@pytest.fixture
def split(tmp_path, monkeypatch) -> pd.DataFrame:
    monkeypatch.chdir(tmp_path)
    return write_split(tmp_path)


def build(table, out, workers=1, **kwargs):
    options = {"size": SIZE, "step": STEP, "subsets": ("train", "val", "test"), "workers": workers, "progress": False}
    return build_patch_cache(table, out, **(options | kwargs))


def fails(table, out, **kwargs) -> str:
    with pytest.raises(ImrestoreError) as caught:
        build(table, out, **kwargs)
    return str(caught.value)


def rgb(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# ------------------------------------------------------------------------------------------ crop grid


@pytest.mark.parametrize(("length", "size", "step", "thresh", "expected"), [
    (96, 32, 32, 0, [0, 32, 64]),          # exact fit: no extra crop
    (100, 32, 32, 4, [0, 32, 64]),         # remainder 4 == thresh: dropped
    (100, 32, 32, 3, [0, 32, 64, 68]),     # remainder 4 > thresh: one crop flush with the edge
    (100, 32, 32, 0, [0, 32, 64, 68]),
    (720, 256, 128, 0, [0, 128, 256, 384, 464]),  # GoPro's height at the cache defaults
    (1280, 256, 128, 0, [0, 128, 256, 384, 512, 640, 768, 896, 1024]),
    (32, 32, 16, 0, [0]),                  # size == length
    (40, 32, 100, 0, [0, 8]),              # step larger than the image
    (40, 32, 100, 8, [0]),
])
def test_crop_positions_edges(length, size, step, thresh, expected):
    assert crop_positions(length, size, step, thresh) == expected == basicsr_positions(length, size, step, thresh)


def test_crop_positions_match_basicsr_everywhere():
    for length in range(1, 70):
        for size in range(1, length + 1, 3):
            for step in (1, 2, 5, 7, 16, 64):
                for thresh in (0, 1, 3, 10):
                    assert crop_positions(length, size, step, thresh) == basicsr_positions(length, size, step, thresh)


def test_crop_positions_rejects_a_patch_larger_than_the_side_and_bad_geometry():
    with pytest.raises(ImrestoreError, match="patch size 33 is larger than the image side of 32 pixels"):
        crop_positions(32, 33, 8, 0)
    for size, step, thresh, name in ((0, 8, 0, "size"), (16, 0, 0, "step"), (16, 8, -1, "thresh_size"),
                                     (16.0, 8, 0, "size"), (True, 8, 0, "size")):
        with pytest.raises(ImrestoreError, match=f"patch {name} must be an integer"):
            crop_positions(64, size, step, thresh)


# ------------------------------------------------------------------------------------------ plan


def test_plan_geometry_counts_and_order(split):
    plan = plan_patches(split, SIZE, STEP, 0)
    assert tuple(plan.columns) == ("pair_id", "input_path", "target_path", "x", "y")
    expected = [len(basicsr_positions(w, SIZE, STEP, 0)) * len(basicsr_positions(h, SIZE, STEP, 0))
                for shapes in SIZES.values() for w, h in shapes]
    assert expected[:4] == [8 * 5, 8 * 5, 4 * 2, 3 * 1]  # 70: 0..48 step 8, plus 54; 48: 0..32; 40: 0..24; 24: 0, 8
    assert plan["pair_id"].value_counts(sort=False).tolist() == expected
    assert plan["pair_id"].drop_duplicates().tolist() == split["pair_id"].tolist()  # table order, pair by pair
    first = plan[plan["pair_id"] == split["pair_id"][0]]
    xs, ys = basicsr_positions(70, SIZE, STEP, 0), basicsr_positions(48, SIZE, STEP, 0)
    assert list(zip(first["y"], first["x"])) == [(y, x) for y in ys for x in xs]  # row-major, as BasicSR
    assert (plan["x"] + SIZE <= plan["pair_id"].map(split.set_index("pair_id")["input_width"])).all()
    assert len(plan_patches(split, SIZE, STEP, thresh_size=100)) == 7 * 5 * 3 + 4 * 2 + 3 * 1  # no flush crops


def test_plan_names_the_file_smaller_than_the_patch(split):
    with pytest.raises(ImrestoreError) as caught:
        plan_patches(split, 40, 8, 0)
    message = str(caught.value)
    assert message.startswith(split["input_path"][2]) and "40x40" in message and "40x24" in message


def test_plan_needs_no_decoding(tmp_path):
    table = pd.DataFrame({"pair_id": ["a"], "input_path": ["nowhere/a.png"], "target_path": ["nowhere/b.png"],
                          "input_width": [1280], "input_height": [720]})
    assert len(plan_patches(table, 256, 128, 0)) == 9 * 5


# ------------------------------------------------------------------------------------------ build


def test_built_cache_round_trips_to_the_source_pixels(split, tmp_path):
    meta = build(split, tmp_path / "cache", params={"size": SIZE, "note": "x"}, split_sha256="ab" * 32, workers=2,
                 progress=True)  # the bars run beside the pool and the hashing threads
    assert meta == json.loads((tmp_path / "cache" / "cache.json").read_text())
    assert (meta["format"], meta["size"], meta["step"], meta["thresh_size"]) == (1, SIZE, STEP, 0)
    assert meta["params"] == {"size": SIZE, "note": "x"} and meta["split_sha256"] == "ab" * 32
    plan = plan_patches(split, SIZE, STEP, 0)
    for subset in SIZES:
        cache = PatchCache(tmp_path / "cache", subset, verify="full")
        rows = split[split["subset"] == subset]
        assert len(cache) == meta["subsets"][subset]["count"] == len(plan[plan["pair_id"].isin(rows["pair_id"])])
        assert meta["subsets"][subset]["shape"] == [len(cache), SIZE, SIZE, 3]
        assert meta["subsets"][subset]["pairs"] == len(rows)
        assert tuple(cache.index.columns) == INDEX_COLUMNS and cache.index["patch"].tolist() == list(range(len(cache)))
        decoded = {}
        for i, row in cache.index.iterrows():
            for role, array in (("input", cache.inputs), ("target", cache.targets)):
                path = row[f"{role}_path"]
                pixels = decoded.setdefault(path, rgb(path))
                np.testing.assert_array_equal(array[i], pixels[row.y:row.y + SIZE, row.x:row.x + SIZE])
        assert not np.array_equal(cache.inputs, cache.targets)  # blurred ≠ sharp: the roles were not swapped


def test_bytes_do_not_depend_on_the_worker_count(split, tmp_path):
    one, two = build(split, tmp_path / "one", workers=1), build(split, tmp_path / "two", workers=2)
    assert one == two
    files = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "two").iterdir()) and len(files) == 3 * 3 + 1
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_only_requested_subsets_are_built(split, tmp_path):
    meta = build(split, tmp_path / "cache", subsets=("train",))
    assert list(meta["subsets"]) == ["train"]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "cache.json", "train_index.csv", "train_input.npy", "train_target.npy"]


# ------------------------------------------------------------------------------------------ reader checks


@pytest.fixture
def cache(split, tmp_path):
    build(split, tmp_path / "cache", subsets=("train",))
    return tmp_path / "cache"


def opened(root, verify="shape") -> str:
    with pytest.raises(ImrestoreError) as caught:
        PatchCache(root, "train", verify=verify)
    return str(caught.value)


def test_reader_detects_a_truncated_array(cache):
    path = array_file(cache, "train", "target")
    path.write_bytes(path.read_bytes()[:-100])
    assert opened(cache).startswith(f"patch cache file {path} is corrupt")


def test_reader_detects_an_array_of_the_wrong_shape(cache):
    path = array_file(cache, "train", "input")
    np.save(path, np.load(path)[:-1])
    message = opened(cache)
    assert str(path) in message and "expected uint8 (88, 16, 16, 3)" in message
    assert "found uint8 (87, 16, 16, 3)" in message


def test_reader_detects_a_flipped_byte_only_when_verifying_fully(cache):
    path = array_file(cache, "train", "input")
    data = bytearray(path.read_bytes())
    data[-1000] ^= 0x01
    path.write_bytes(bytes(data))
    assert len(PatchCache(cache, "train")) == 88  # shape checks cannot see content
    message = opened(cache, verify="full")
    assert message.startswith(f"patch cache file {path}: expected sha256") and "found" in message


@pytest.mark.parametrize("victim", ["train_input.npy", "train_target.npy", "train_index.csv", "cache.json"])
def test_reader_names_a_missing_file(cache, victim):
    (cache / victim).unlink()
    for verify in ("shape", "full"):
        message = opened(cache, verify)
        assert (str(cache / victim) if victim != "cache.json" else "cache.json is missing") in message


def test_reader_detects_a_stale_index(cache):
    path = index_file(cache, "train")
    index = pd.read_csv(path)
    index.iloc[:-3].to_csv(path, index=False)
    assert opened(cache).startswith(f"{path}: expected 88 rows (cache.json), found 85")


def test_reader_refuses_an_unknown_subset(cache):
    with pytest.raises(ImrestoreError, match="has no subset 'test'; it has train"):
        PatchCache(cache, "test")


# ------------------------------------------------------------------------------------------ build errors


def test_patch_larger_than_an_image_names_the_file(split, tmp_path):
    message = fails(split, tmp_path / "cache", size=20)
    assert message.startswith(split["input_path"][3]) and "20x20" in message and "32x16" in message
    assert not (tmp_path / "cache").exists()


def test_empty_subset_is_named(split, tmp_path):
    message = fails(split[split["subset"] != "val"], tmp_path / "cache")
    assert "subset 'val'" in message and "no pairs" in message and "test: 1, train: 3" in message


def test_mismatched_pair_shapes_name_both_files(split, tmp_path):
    target = split["target_path"][1]
    save_png(tmp_path / target, natural_image(99, 64, 48))
    message = fails(split, tmp_path / "cache", workers=2)
    assert split["input_path"][1] in message and target in message
    assert "input 70x48" in message and "target 64x48" in message


def test_undecodable_file_is_named(split, tmp_path):
    victim = tmp_path / split["input_path"][4]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    message = fails(split, tmp_path / "cache", workers=2)
    assert message.startswith(f"{split['input_path'][4]}: cannot decode")


def test_a_stale_split_table_is_named(split, tmp_path):
    table = split.copy()
    table.loc[0, "input_width"] = 64
    message = fails(table, tmp_path / "cache")
    assert message.startswith(f"{split['input_path'][0]}: the split table says 64x48, the file decodes to 70x48")


def test_a_failed_build_leaves_no_output(split, tmp_path):
    (tmp_path / split["target_path"][2]).unlink()
    message = fails(split, tmp_path / "cache", workers=2)
    assert message.startswith(f"{split['target_path'][2]}: file not found")
    assert not (tmp_path / "cache").exists() and not list(tmp_path.glob(".tmp-*"))


def test_a_failed_build_leaves_the_previous_cache_untouched(split, tmp_path):
    build(split, tmp_path / "cache")
    before = {p.name: p.read_bytes() for p in (tmp_path / "cache").iterdir()}
    (tmp_path / split["input_path"][0]).write_bytes(b"not a png")
    fails(split, tmp_path / "cache", step=4)
    assert {p.name: p.read_bytes() for p in (tmp_path / "cache").iterdir()} == before
    assert not list(tmp_path.glob(".tmp-*"))
    PatchCache(tmp_path / "cache", "train", verify="full")


def test_a_patch_larger_than_an_image_names_the_param_to_lower(split):
    too_big = max(split["input_width"].max(), split["input_height"].max()) + 1
    with pytest.raises(ImrestoreError, match=rf"the patch size {too_big}x{too_big} does not fit the image.*lower "
                                             r"patches\.gopro\.crop_size$"):
        plan_patches(split.assign(dataset="gopro"), too_big, 8, thresh_size=0)


def test_the_patch_side_is_crop_size_and_the_old_name_is_explained():
    from imrestore.data.patches import PatchGeometry

    geometry = PatchGeometry.for_dataset("sidd", {"crop_size": 64, "step": 32, "thresh_size": 0})
    assert geometry.keywords() == {"size": 64, "step": 32, "thresh_size": 0}
    with pytest.raises(ImrestoreError, match=r"patches\.sidd\.size is now patches\.sidd\.crop_size: DVC's run-cache "
                                             r"ignores every param named `size`"):
        PatchGeometry.for_dataset("sidd", {"size": 64, "step": 32, "thresh_size": 0})
    with pytest.raises(ImrestoreError, match=r"^params\.yaml: patches\.sidd\.step must be an integer ≥ 1, found nothing$"):
        PatchGeometry.for_dataset("sidd", {"crop_size": 64, "thresh_size": 0})
