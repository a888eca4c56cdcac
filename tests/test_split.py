import itertools
import re

import pandas as pd
import pytest

from imrestore.data.split import SplitConfig, assign_subsets, check_leakage, iso_level, split_summary
from imrestore.errors import ImrestoreError

CAMERAS = ["GP", "IP", "S6", "N6", "G4"]
ISOS = [100, 800, 3200, 1600, 400]


def sidd_manifest(scenes: int = 10, instances: int = 4) -> pd.DataFrame:
    rows = []
    for scene, k in itertools.product(range(1, scenes + 1), range(instances)):
        n = len(rows) + 1
        camera, iso = CAMERAS[(scene + k) % 5], ISOS[(scene * 3 + k) % 5]
        rows.append({"pair_id": f"{n:04d}_{scene:03d}/010", "split": "all", "group": f"{scene:03d}",
                     "scene_instance": f"{n:04d}_{scene:03d}_{camera}", "camera": camera, "iso": iso,
                     "input_sha256": f"in{n}", "target_sha256": f"gt{n}"})
    return pd.DataFrame(rows)


def gopro_manifest(blur: dict[str, float] | None = None) -> pd.DataFrame:
    """Five train and two test sequences of 4 frames; `blur` gives sequences an input–target MAE."""
    rows = []
    for split, seqs in (("train", ["A", "B", "C", "D", "E"]), ("test", ["T1", "T2"])):
        for seq, frame in itertools.product(seqs, range(4)):
            rows.append({"pair_id": f"{split}/{seq}/{frame:06d}", "split": split, "group": seq,
                         "input_sha256": f"{seq}{frame}i", "target_sha256": f"{seq}{frame}t"})
            if blur is not None:
                rows[-1]["input_target_mae"] = blur.get(seq, 8.0) + 0.1 * frame
    return pd.DataFrame(rows)


def test_sidd_split_is_grouped_by_scene_80_20_and_deterministic():
    config = SplitConfig(seed=3)
    table = assign_subsets(sidd_manifest(), "sidd", config)
    assert (table.groupby("group")["subset"].nunique() == 1).all()
    assert (table["subset"] == "test").mean() == pytest.approx(0.2)
    assert table["subset"].tolist() == assign_subsets(sidd_manifest(), "sidd", config)["subset"].tolist()
    seeds = {tuple(assign_subsets(sidd_manifest(), "sidd", SplitConfig(seed=s))["subset"]) for s in range(6)}
    assert len(seeds) > 1, "the seed decides the split"
    check_leakage(table)


def test_cameras_and_iso_levels_are_kept_on_both_sides_where_groups_allow():
    for seed in range(5):
        table = assign_subsets(sidd_manifest(), "sidd", SplitConfig(seed=seed))
        for column in (table["camera"], table["iso"].map(iso_level)):
            sides = {s: set(column[table["subset"] == s]) for s in ("train", "test")}
            assert sides["test"] == sides["train"] == set(column)


def test_instance_grouping_reproduces_the_papers_split_and_reports_shared_scenes():
    config = SplitConfig(group_by="instance")
    table = assign_subsets(sidd_manifest(), "sidd", config)
    assert table["split_group"].is_unique and (table["subset"] == "test").sum() == 8
    summary = split_summary(table, "sidd", config)
    assert summary["shared_scenes"] > 0 and summary["pairs"] == {"train": 32, "val": 0, "test": 8}


def test_validation_subset_is_carved_from_train_in_whole_groups():
    table = assign_subsets(sidd_manifest(), "sidd", SplitConfig(val_fraction=0.1))
    counts = table["subset"].value_counts().to_dict()
    assert counts == {"train": 28, "test": 8, "val": 4}
    assert (table.groupby("group")["subset"].nunique() == 1).all()


def test_gopro_keeps_the_official_split_and_carves_val_from_train_sequences():
    manifest = gopro_manifest()
    table = assign_subsets(manifest, "gopro", SplitConfig(val_fraction=0.2))
    assert (table.loc[manifest["split"] == "test", "subset"] == "test").all()
    val = table[table["subset"] == "val"]
    assert len(val) == 4 and val["group"].nunique() == 1 and set(val["split"]) == {"train"}
    summary = split_summary(table, "gopro", SplitConfig(val_fraction=0.2))
    assert summary["pairs"] == {"train": 16, "val": 4, "test": 8} and summary["groups"]["test"] == 2


def test_gopro_val_is_the_sequence_whose_blur_is_most_like_the_rest():
    # A barely blurred sequence would measure nothing as val (its PSNR falls as the network departs from
    # identity); whatever the seed, the one closest to the other train sequences' blur is held out.
    blur = {"A": 1.0, "B": 14.0, "C": 9.0, "D": 5.0, "E": 12.0}  # the other four of C average 8.0
    chosen = {seed: assign_subsets(gopro_manifest(blur), "gopro", SplitConfig(seed=seed, val_fraction=0.2))
              for seed in range(5)}
    assert {seed: set(table.loc[table["subset"] == "val", "group"]) for seed, table in chosen.items()} == {
        seed: {"C"} for seed in range(5)}
    # Without the column, the seed alone decides, as before.
    plain = {frozenset(assign_subsets(gopro_manifest(), "gopro", SplitConfig(seed=s, val_fraction=0.2))
                       .query("subset == 'val'")["group"]) for s in range(8)}
    assert len(plain) > 1


def test_sidd_splits_by_its_camera_and_iso_metadata_not_by_measured_noise():
    manifest = sidd_manifest()
    noisy = manifest.assign(input_target_mae=[float(n % 7) for n in range(len(manifest))])
    for seed in range(3):
        config = SplitConfig(seed=seed, val_fraction=0.1)
        assert assign_subsets(noisy, "sidd", config)["subset"].tolist() == \
            assign_subsets(manifest, "sidd", config)["subset"].tolist()


def test_leaks_are_named():
    table = assign_subsets(sidd_manifest(), "sidd", SplitConfig())
    test_row = table.index[table["subset"] == "test"][0]
    train_row = table.index[table["subset"] == "train"][0]
    table.loc[test_row, "input_sha256"] = table.loc[train_row, "input_sha256"]
    table.loc[train_row + 1, "split_group"] = table.loc[test_row, "split_group"]
    with pytest.raises(ImrestoreError) as caught:
        check_leakage(table)
    message = str(caught.value)
    assert f"group {table.loc[test_row, 'split_group']} is in 2 subsets" in message
    assert "identical input content" in message
    assert f"{table.loc[test_row, 'pair_id']} (test)" in message and f"{table.loc[train_row, 'pair_id']} (train)" in message


@pytest.mark.parametrize(
    ("dataset", "section", "message"),
    [
        ("sidd", {"test_fraction": 1.5}, "params.yaml: split.sidd.test_fraction must be a number > 0 and < 1, found 1.5"),
        # An empty test subset would only fail at evaluate, after both models trained.
        ("sidd", {"test_fraction": 0}, "params.yaml: split.sidd.test_fraction must be a number > 0 and < 1, found 0"),
        ("gopro", {"val_fraction": 1}, "params.yaml: split.gopro.val_fraction must be a number ≥ 0 and < 1, found 1"),
        ("sidd", {"seed": -1}, "params.yaml: split.sidd.seed must be an integer ≥ 0 and ≤ 4294967295, found -1"),
        ("gopro", {"seed": 2**32}, "split.gopro.seed must be an integer ≥ 0 and ≤ 4294967295, found 4294967296"),
        ("sidd", {"group_by": "camera"}, "params.yaml: split.sidd.group_by must be one of 'scene', 'instance', found 'camera'"),
        ("gopro", {"test_fraction": 0.2}, "unknown key split.gopro.test_fraction"),
        ("sidd", {"seed": "x"}, "split.sidd.seed must be an integer ≥ 0 and ≤ 4294967295, found 'x'"),
    ],
)
def test_bad_split_params_are_named(dataset, section, message):
    with pytest.raises(ImrestoreError, match=re.escape(message)):
        SplitConfig.for_dataset(dataset, section)


def test_the_extreme_seeds_are_accepted_and_split():
    for seed in (0, 2**32 - 1):
        assert (assign_subsets(sidd_manifest(), "sidd", SplitConfig(seed=seed))["subset"] == "test").sum() == 8


def gopro_with_one_train_sequence() -> pd.DataFrame:
    return gopro_manifest().query("split == 'test' or group == 'A'")


@pytest.mark.parametrize(
    ("dataset", "manifest", "section", "message"),
    [
        ("sidd", sidd_manifest(), {"test_fraction": 0.95, "val_fraction": 0.1},
         "split.sidd: cannot carve the val subset (split.sidd.val_fraction: 0.1) from 1 scene group(s) ['{left}'] "
         "that the test subset (split.sidd.test_fraction: 0.95) left of 10: a grouped split needs at least two, one "
         "for each side; lower split.sidd.test_fraction or set split.sidd.val_fraction: 0 (no val subset) or set "
         "split.sidd.group_by: instance (40 groups)"),
        ("sidd", sidd_manifest(scenes=2), {"val_fraction": 0.3},  # test always takes a group: lowering it won't do
         "split.sidd: cannot carve the val subset (split.sidd.val_fraction: 0.3) from 1 scene group(s) ['{left}'] "
         "that the test subset (split.sidd.test_fraction: 0.2) left of 2: a grouped split needs at least two, one "
         "for each side; set split.sidd.val_fraction: 0 (no val subset) or set split.sidd.group_by: instance "
         "(8 groups)"),
        ("sidd", sidd_manifest(scenes=1), {},
         "split.sidd: cannot carve the test subset (split.sidd.test_fraction: 0.2) from 1 scene group(s) ['001']: a "
         "grouped split needs at least two, one for each side; set split.sidd.group_by: instance (4 groups)"),
        ("sidd", sidd_manifest(scenes=1, instances=1), {"group_by": "instance"},
         "split.sidd: cannot carve the test subset (split.sidd.test_fraction: 0.2) from 1 instance group(s) "
         "['0001_001_IP']: a grouped split needs at least two, one for each side; no split key can fix that, the "
         "dataset has too few groups"),
        ("gopro", gopro_with_one_train_sequence(), {"val_fraction": 0.1},
         "split.gopro: cannot carve the val subset (split.gopro.val_fraction: 0.1) from 1 train sequence(s) ['A']: a "
         "grouped split needs at least two, one for each side; set split.gopro.val_fraction: 0 (no val subset)"),
    ],
)
def test_a_split_with_too_few_groups_names_the_subset_and_the_keys_to_change(dataset, manifest, section, message):
    config = SplitConfig.for_dataset(dataset, section)
    with pytest.raises(ImrestoreError) as caught:
        assign_subsets(manifest, dataset, config)
    if "{left}" in message:  # the one group the test subset left in train
        test = assign_subsets(manifest, dataset, SplitConfig.for_dataset(dataset, {**section, "val_fraction": 0}))
        message = message.format(left=test.loc[test["subset"] == "train", "group"].iloc[0])
    assert str(caught.value) == message
