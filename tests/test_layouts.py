import pytest

from imrestore.errors import ImrestoreError
from imrestore.data.layouts import (
    SiddInstance, check_layout, check_member_layout, find_layout_root, layout_root, list_pairs,
)
from layout_builders import GOPRO_COUNTS, write_gopro, write_sidd


def test_sidd_folder_names_parse_into_metadata():
    info = SiddInstance.parse("0042_007_IP_01600_01000_4400_H")
    assert (info.instance, info.scene, info.camera, info.iso, info.shutter, info.illuminant_k, info.brightness) == (
        42, 7, "IP", 1600, 1000, 4400, "H")


def test_bad_sidd_folder_name_says_what_was_expected():
    with pytest.raises(ImrestoreError, match=r"'scene_12'.*NNNN_SSS_CC_IIIII_TTTTT_LLLL_B"):
        SiddInstance.parse("scene_12")


def test_gopro_pairs_follow_the_official_split(tmp_path):
    root = write_gopro(tmp_path)
    pairs = list_pairs(root, "gopro")
    counts = {s: sum(p.split == s for p in pairs) for s in GOPRO_COUNTS}
    assert counts == GOPRO_COUNTS
    first = pairs[0]
    assert first.input.parent.name == "blur" and first.target.parent.name == "sharp"
    assert first.input.name == first.target.name and first.group == first.meta["sequence"]
    gamma = list_pairs(root, "gopro", gopro_input="blur_gamma")[0]
    assert gamma.input.parent.name == "blur_gamma"


def test_sidd_pairs_carry_scene_metadata(tmp_path):
    pairs = list_pairs(write_sidd(tmp_path), "sidd")
    assert [p.meta["camera"] for p in pairs] == ["S6", "GP", "IP"]
    assert [p.group for p in pairs] == ["001", "001", "002"]
    assert all(p.input.name == "NOISY_SRGB_010.PNG" and p.target.name == "GT_SRGB_010.PNG" for p in pairs)


def test_sidd_medium_file_names_are_understood(tmp_path):
    root = write_sidd(tmp_path)
    folder = next((root / "Data").iterdir())
    for role in ("GT", "NOISY"):
        (folder / f"{role}_SRGB_010.PNG").rename(folder / f"{folder.name[:4]}_{role}_SRGB_011.PNG")
    pairs = [p for p in list_pairs(root, "sidd") if p.meta["scene_instance"] == folder.name]
    assert len(pairs) == 1 and pairs[0].meta["capture"] == "011" and pairs[0].input and pairs[0].target


def test_missing_partner_is_listed_not_dropped(tmp_path):
    root = write_gopro(tmp_path)
    victim = next((root / "train").glob("*/sharp/000001.png"))
    victim.unlink()
    orphan = [p for p in list_pairs(root, "gopro") if p.target is None]
    assert len(orphan) == 1 and orphan[0].input.name == "000001.png"


def test_wrong_gopro_layout_names_the_expected_pattern(tmp_path):
    root = write_gopro(tmp_path)
    sharp = next((root / "test").glob("*/sharp"))
    sharp.rename(sharp.with_name("gt"))
    with pytest.raises(ImrestoreError, match=r"expected GOPRO_Large/test/\*/\{blur,blur_gamma,sharp\}, found .* without sharp"):
        check_layout(root, "gopro")


def test_layout_root_is_found_inside_wrapper_folders(tmp_path):
    write_gopro(tmp_path / "download" / "extra")
    assert find_layout_root(tmp_path / "download", "gopro").name == "GOPRO_Large"
    with pytest.raises(ImrestoreError, match=r"expected GOPRO_Large/ in .*, found extra/"):
        layout_root(tmp_path / "download", "gopro")


def _member_names(top):
    """What an archive of `top` (a folder) would list: paths from above it, folders with a slash."""
    return [p.relative_to(top.parent).as_posix() + ("/" if p.is_dir() else "") for p in sorted(top.rglob("*"))]


@pytest.mark.parametrize("dataset, write", [("gopro", write_gopro), ("sidd", write_sidd)])
def test_member_names_and_the_disk_get_the_same_verdict(tmp_path, dataset, write):
    root = write(tmp_path / "wrapper")
    check_layout(root, dataset)
    check_member_layout(_member_names(tmp_path / "wrapper"), dataset)  # the dataset one folder down
    broken = next(p for p in root.rglob("*") if p.is_dir() and p.name in ("sharp", "Data"))
    broken.rename(broken.with_name("renamed"))
    with pytest.raises(ImrestoreError) as on_disk:
        check_layout(root, dataset)
    with pytest.raises(ImrestoreError) as by_name:
        check_member_layout(_member_names(root), dataset)
    assert str(on_disk.value) == str(by_name.value)


def test_member_names_without_the_dataset_folder_list_what_the_archive_holds():
    names = ["GoPro/README.txt", "GoPro/frames/", "notes.txt"]
    with pytest.raises(ImrestoreError, match=r"expected GOPRO_Large/ in the archive, at most 3 folder\(s\) deep, "
                                             r"found GoPro/, notes\.txt;"):
        check_member_layout(names, "gopro")


@pytest.mark.parametrize("dataset, write", [("gopro", write_gopro), ("sidd", write_sidd)])
def test_the_dataset_folder_may_sit_under_three_wrappers_and_no_more(tmp_path, dataset, write):
    root = write(tmp_path / "three" / "a" / "b" / "c")
    check_member_layout(_member_names(tmp_path / "three" / "a"), dataset)
    assert find_layout_root(tmp_path / "three", dataset) == root
    write(tmp_path / "four" / "a" / "b" / "c" / "d")
    with pytest.raises(ImrestoreError, match=r"expected .*/ in the archive, at most 3 folder\(s\) deep, found a/;"):
        check_member_layout(_member_names(tmp_path / "four" / "a"), dataset)
    with pytest.raises(ImrestoreError, match=r"expected .*/ in .*four, at most 3 folder\(s\) deep, found a/;"):
        find_layout_root(tmp_path / "four", dataset)


def test_a_dataset_folder_inside_one_of_its_own_name_is_found(tmp_path):
    # Zipping the folder an earlier unzip made gives GOPRO_Large/GOPRO_Large/train/…: the outer one only wraps.
    root = write_gopro(tmp_path / "unpacked" / "GOPRO_Large")
    check_member_layout(_member_names(tmp_path / "unpacked" / "GOPRO_Large"), "gopro")
    assert find_layout_root(tmp_path / "unpacked", "gopro") == root
