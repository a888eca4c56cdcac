"""SIDD validation benchmark files: both MAT formats, finding them, and every way they can be wrong."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from mat_builders import (
    GT_NAME,
    NOISY_NAME,
    sidd_blocks,
    write_mat_v5,
    write_mat_v73,
    write_sidd_validation,
)

from imrestore.atomic import ensure_text
from imrestore.errors import ImrestoreError
from imrestore.evaluation.testsets import (
    BENCHMARK_READMES,
    SIDD_VALIDATION_FILES,
    SiddValidation,
    find_sidd_validation,
    load_sidd_validation,
    read_mat_array,
    sidd_benchmark_folder,
)

NOISY_KEY, GT_KEY = Path(NOISY_NAME).stem, Path(GT_NAME).stem


def test_the_builders_use_the_published_file_names() -> None:
    assert (NOISY_NAME, GT_NAME) == SIDD_VALIDATION_FILES


@pytest.mark.parametrize("v73", [False, True], ids=["v5", "v7.3"])
def test_round_trip_returns_exactly_the_arrays_written(tmp_path: Path, v73: bool) -> None:
    noisy_path, gt_path = write_sidd_validation(tmp_path, images=2, blocks=3, size=32, v73=v73, seed=4)
    noisy, gt = sidd_blocks(images=2, blocks=3, size=32, seed=4)
    for path, expected in ((noisy_path, noisy), (gt_path, gt)):
        array = read_mat_array(path)
        assert array.dtype == np.uint8
        assert array.shape == (2, 3, 32, 32, 3)
        np.testing.assert_array_equal(array, expected)
    assert not np.array_equal(noisy, gt)


def test_v5_and_v73_files_read_identically(tmp_path: Path) -> None:
    v5 = load_sidd_validation(*write_sidd_validation(tmp_path / "v5", images=3, blocks=2, size=24))
    v73 = load_sidd_validation(*write_sidd_validation(tmp_path / "v73", images=3, blocks=2, size=24, v73=True))
    np.testing.assert_array_equal(v5.noisy, v73.noisy)
    np.testing.assert_array_equal(v5.gt, v73.gt)


def test_savemat_keeps_the_5d_uint8_layout_of_the_published_files(tmp_path: Path) -> None:
    noisy_path, _ = write_sidd_validation(tmp_path, images=2, blocks=3, size=16)
    assert scipy.io.whosmat(noisy_path) == [(NOISY_KEY, (2, 3, 16, 16, 3), "uint8")]


def test_the_v73_file_is_what_matlab_writes_and_scipy_refuses(tmp_path: Path) -> None:
    noisy_path, _ = write_sidd_validation(tmp_path, images=2, blocks=3, size=16, v73=True)
    assert noisy_path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with pytest.raises(NotImplementedError):  # so read_mat_array really goes through h5py
        scipy.io.loadmat(noisy_path)
    with h5py.File(noisy_path, "r") as mat:
        assert mat.userblock_size == 512
        assert mat[NOISY_KEY].shape == (3, 16, 16, 3, 2)  # column-major: MATLAB's axes reversed
        assert mat[NOISY_KEY].attrs["MATLAB_class"] == b"uint8"


def test_blocks_are_named_image_block_and_match_the_arrays(tmp_path: Path) -> None:
    benchmark = load_sidd_validation(*write_sidd_validation(tmp_path, images=2, blocks=3, size=32, v73=True))
    noisy, gt = sidd_blocks(images=2, blocks=3, size=32)
    assert benchmark.n_blocks == 6
    blocks = list(benchmark.blocks())
    assert [name for name, _, _ in blocks] == ["0000_00", "0000_01", "0000_02", "0001_00", "0001_01", "0001_02"]
    for name, noisy_block, gt_block in blocks:
        image, block = (int(part) for part in name.split("_"))
        for got, expected in ((noisy_block, noisy[image, block]), (gt_block, gt[image, block])):
            assert got.shape == (32, 32, 3) and got.dtype == np.uint8
            assert got.flags.c_contiguous
            np.testing.assert_array_equal(got, expected)
        # Views, not copies: listing all 1280 blocks of the real benchmark must not double its 500 MB.
        assert np.shares_memory(noisy_block, benchmark.noisy) and np.shares_memory(gt_block, benchmark.gt)


def test_block_names_stay_sortable_at_benchmark_scale() -> None:
    shape = (40, 32, 4, 4, 3)  # the published image and block counts, tiny blocks
    benchmark = SiddValidation(np.zeros(shape, np.uint8), np.zeros(shape, np.uint8), Path("n.mat"), Path("g.mat"))
    names = [name for name, _, _ in benchmark.blocks()]
    assert benchmark.n_blocks == len(names) == 1280
    assert names == sorted(names) and names[-1] == "0039_31" and names[(3 * 32) + 17] == "0003_17"


def test_find_returns_none_when_neither_file_is_there(tmp_path: Path) -> None:
    (tmp_path / "other.mat").write_bytes(b"")
    assert find_sidd_validation(tmp_path) is None


def test_find_returns_noisy_then_gt_from_the_folder_itself(tmp_path: Path) -> None:
    noisy_path, gt_path = write_sidd_validation(tmp_path, images=1, blocks=1, size=16)
    assert find_sidd_validation(tmp_path) == (noisy_path, gt_path)


def test_find_searches_nested_folders(tmp_path: Path) -> None:
    noisy_path, gt_path = write_sidd_validation(tmp_path / "SIDD" / "benchmark" / "val", images=1, blocks=1, size=16)
    assert find_sidd_validation(tmp_path) == (noisy_path, gt_path)


@pytest.mark.parametrize("present", [NOISY_NAME, GT_NAME])
def test_find_names_the_missing_file_when_only_one_is_there(tmp_path: Path, present: str) -> None:
    noisy_path, gt_path = write_sidd_validation(tmp_path / "deep", images=1, blocks=1, size=16)
    (gt_path if present == NOISY_NAME else noisy_path).unlink()
    missing = GT_NAME if present == NOISY_NAME else NOISY_NAME
    with pytest.raises(ImrestoreError, match=f"not {missing}") as error:
        find_sidd_validation(tmp_path)
    assert str(tmp_path / "deep" / present) in str(error.value)


def test_find_refuses_to_guess_between_copies(tmp_path: Path) -> None:
    write_sidd_validation(tmp_path / "a", images=1, blocks=1, size=16)
    write_sidd_validation(tmp_path / "b", images=1, blocks=1, size=16)
    with pytest.raises(ImrestoreError, match="several") as error:
        find_sidd_validation(tmp_path)
    for copy in ("a", "b"):
        assert str(tmp_path / copy / NOISY_NAME) in str(error.value)


def test_find_follows_a_symlinked_dataset_folder(tmp_path: Path) -> None:
    noisy_path, _ = write_sidd_validation(tmp_path / "elsewhere" / "SIDD", images=1, blocks=1, size=16)
    project = tmp_path / "project"
    project.mkdir()
    (project / "sidd").symlink_to(noisy_path.parent, target_is_directory=True)
    assert find_sidd_validation(project) == (project / "sidd" / NOISY_NAME, project / "sidd" / GT_NAME)


def test_find_counts_a_file_seen_through_a_symlink_once_and_survives_a_loop(tmp_path: Path) -> None:
    write_sidd_validation(tmp_path / "real", images=1, blocks=1, size=16)
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real" / "loop").symlink_to(tmp_path, target_is_directory=True)
    found = find_sidd_validation(tmp_path)
    assert found is not None
    assert [path.name for path in found] == [NOISY_NAME, GT_NAME]


def test_find_treats_a_missing_folder_as_holding_neither_file(tmp_path: Path) -> None:
    assert find_sidd_validation(tmp_path / "nope") is None


def test_find_refuses_a_file_in_place_of_the_folder(tmp_path: Path) -> None:
    noisy_path, _ = write_sidd_validation(tmp_path, images=1, blocks=1, size=16)
    with pytest.raises(ImrestoreError, match=re.escape(f"{noisy_path}: expected a folder")):
        find_sidd_validation(noisy_path)


@pytest.mark.parametrize("v73", [False, True], ids=["v5", "v7.3"])
def test_a_missing_key_lists_the_keys_the_file_has(tmp_path: Path, v73: bool) -> None:
    noisy_path, _ = write_sidd_validation(tmp_path, images=1, blocks=1, size=16, v73=v73)
    with pytest.raises(ImrestoreError, match=f"'BenchmarkNoisyBlocksSrgb'.*'{NOISY_KEY}'") as error:
        read_mat_array(noisy_path, key="BenchmarkNoisyBlocksSrgb")
    assert str(noisy_path) in str(error.value)


@pytest.mark.parametrize("v73", [False, True], ids=["v5", "v7.3"])
def test_a_renamed_file_no_longer_matches_its_key(tmp_path: Path, v73: bool) -> None:
    noisy_path, _ = write_sidd_validation(tmp_path, images=1, blocks=1, size=16, v73=v73)
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    (swapped / GT_NAME).write_bytes(noisy_path.read_bytes())  # the noisy file under the ground truth's name
    (swapped / NOISY_NAME).write_bytes(noisy_path.read_bytes())
    with pytest.raises(ImrestoreError, match=f"expected a variable '{GT_KEY}', found the variables '{NOISY_KEY}'"):
        load_sidd_validation(swapped / NOISY_NAME, swapped / GT_NAME)


def _write_pair(folder: Path, noisy: np.ndarray, gt: np.ndarray, v73: bool) -> tuple[Path, Path]:
    write = write_mat_v73 if v73 else write_mat_v5
    return write(folder / NOISY_NAME, NOISY_KEY, noisy), write(folder / GT_NAME, GT_KEY, gt)


@pytest.mark.parametrize("v73", [False, True], ids=["v5", "v7.3"])
@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (np.zeros((2, 16, 16, 3), np.uint8), r"found shape \(2, 16, 16, 3\)"),
        (np.zeros((1, 2, 16, 16, 4), np.uint8), r"found shape \(1, 2, 16, 16, 4\)"),
        (np.zeros((1, 2, 16, 16, 3), np.float64), "found dtype float64"),
        (np.zeros((1, 2, 16, 16, 3), np.uint16), "found dtype uint16"),
    ],
    ids=["4d", "rgba", "float64", "uint16"],
)
def test_wrong_shape_or_dtype_names_the_file_and_what_was_found(
    tmp_path: Path, v73: bool, bad: np.ndarray, expected: str
) -> None:
    good = np.zeros((1, 2, 16, 16, 3), np.uint8)
    _, gt_path = _write_pair(tmp_path, good, bad, v73)
    with pytest.raises(ImrestoreError, match=expected) as error:
        load_sidd_validation(tmp_path / NOISY_NAME, gt_path)
    assert str(gt_path) in str(error.value)
    assert "(40, 32, 256, 256, 3)" in str(error.value)


def test_noisy_and_gt_of_different_shapes_are_refused(tmp_path: Path) -> None:
    noisy_path, gt_path = _write_pair(
        tmp_path, np.zeros((2, 3, 16, 16, 3), np.uint8), np.zeros((2, 2, 16, 16, 3), np.uint8), v73=False
    )
    with pytest.raises(ImrestoreError, match=r"same shape, found \(2, 3, 16, 16, 3\) and \(2, 2, 16, 16, 3\)") as error:
        load_sidd_validation(noisy_path, gt_path)
    assert str(noisy_path) in str(error.value) and str(gt_path) in str(error.value)


def test_a_matlab_struct_under_the_key_is_refused(tmp_path: Path) -> None:
    noisy_path = write_mat_v5(tmp_path / NOISY_NAME, NOISY_KEY, np.zeros((1, 1, 4, 4, 3), np.uint8))
    gt_path = tmp_path / GT_NAME
    scipy.io.savemat(gt_path, {GT_KEY: {"blocks": np.zeros((2, 2), np.uint8)}})
    with pytest.raises(ImrestoreError, match="cell or struct") as error:
        load_sidd_validation(noisy_path, gt_path)
    assert str(gt_path) in str(error.value)


def test_a_v73_group_under_the_key_is_refused(tmp_path: Path) -> None:
    path = write_mat_v73(tmp_path / GT_NAME, "placeholder", np.zeros((1, 1, 4, 4, 3), np.uint8))
    with h5py.File(path, "a") as mat:
        mat.create_group(GT_KEY).create_dataset("blocks", data=np.zeros(3, np.uint8))
    with pytest.raises(ImrestoreError, match=f"expected '{GT_KEY}' to be a numeric array, found a MATLAB struct"):
        read_mat_array(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not a MATLAB file at all, just some text. " * 8, bytes(range(256)) * 4],
    ids=["empty", "text", "binary"],
)
def test_a_file_that_is_not_a_mat_file_is_refused_with_its_name(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / NOISY_NAME
    path.write_bytes(content)
    with pytest.raises(ImrestoreError, match="expected a complete MATLAB .mat file") as error:
        read_mat_array(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("v73", [False, True], ids=["v5", "v7.3"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_a_truncated_file_is_refused_with_its_name(tmp_path: Path, v73: bool, keep: float) -> None:
    noisy_path, _ = write_sidd_validation(tmp_path / "whole", images=2, blocks=2, size=32, v73=v73)
    data = noisy_path.read_bytes()
    truncated = tmp_path / NOISY_NAME
    truncated.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ImrestoreError, match="truncated") as error:
        read_mat_array(truncated)
    assert str(truncated) in str(error.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ImrestoreError, match="found nothing") as error:
        load_sidd_validation(tmp_path / NOISY_NAME, tmp_path / GT_NAME)
    assert str(tmp_path / NOISY_NAME) in str(error.value)


def test_sidd_files_left_outside_their_folder_are_refused_not_ignored(tmp_path: Path) -> None:
    for dataset, text in BENCHMARK_READMES.items():
        ensure_text(tmp_path / dataset / "README.md", text)
    assert sidd_benchmark_folder(tmp_path) == tmp_path / "sidd"
    assert find_sidd_validation(tmp_path / "sidd") is None  # the READMEs alone are no benchmark
    noisy_path, _ = write_sidd_validation(tmp_path, images=1, blocks=1, size=16)  # where they used to go
    with pytest.raises(ImrestoreError, match=re.escape(f"{noisy_path}: SIDD's validation files belong in "
                                                       f"{tmp_path / 'sidd'}/, the folder evaluate@denoise reads")):
        sidd_benchmark_folder(tmp_path)
    for path in (noisy_path, tmp_path / GT_NAME):
        path.rename(tmp_path / "sidd" / path.name)
    assert sidd_benchmark_folder(tmp_path) == tmp_path / "sidd"
    assert find_sidd_validation(tmp_path / "sidd") is not None
