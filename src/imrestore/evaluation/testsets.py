"""Standard benchmark files, read exactly as published: the SIDD sRGB validation blocks.

SIDD (Abdelhamed, Lin, Brown, CVPR 2018) publishes its validation benchmark as two MATLAB files,
`ValidationNoisyBlocksSrgb.mat` and `ValidationGtBlocksSrgb.mat`. Each holds one variable named like the file
stem: a uint8 RGB array of shape (40, 32, 256, 256, 3), 40 images × 32 blocks of 256×256. Denoising papers
(NAFNet, Restormer, MPRNet, …) report SIDD numbers on these 1280 blocks.

The published files are MAT v5, which `scipy.io.loadmat` reads. Copies re-saved with MATLAB's `-v7.3` are HDF5
files behind a 512-byte MATLAB header; scipy refuses those (NotImplementedError) and h5py reads them. MATLAB
stores arrays column-major, so h5py sees the axes reversed, (3, 256, 256, 32, 40); a transposed view puts them
back without copying.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from imrestore.errors import ImrestoreError

SIDD_VALIDATION_FILES = ("ValidationNoisyBlocksSrgb.mat", "ValidationGtBlocksSrgb.mat")
SIDD_VALIDATION_SHAPE = (40, 32, 256, 256, 3)  # the published benchmark; smaller arrays are accepted (tests)

# Groups MATLAB adds to a v7.3 file for its own bookkeeping (cell/struct references, class metadata).
_MATLAB_INTERNAL_KEYS = ("#refs#", "#subsystem#")


def _find_files(folder: Path, names: tuple[str, ...]) -> dict[str, list[Path]]:
    """Every file called one of `names` in or below `folder`, following symlinked folders, each file once.

    Datasets often live elsewhere and are linked into a project, which `Path.rglob` (Python < 3.13) does not
    follow. Each real folder is walked once, so a symlink loop ends and a linked copy is not a second copy.
    """
    found: dict[str, dict[Path, Path]] = {name: {} for name in names}
    walked: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in walked:
            dirs.clear()
            continue
        walked.add(real)
        dirs.sort()
        for name in names:
            path = Path(root) / name
            if name in files and path.is_file():
                found[name].setdefault(path.resolve(), path)
    return {name: sorted(paths.values()) for name, paths in found.items()}


# Each dataset's benchmark files have their own folder under `evaluate.benchmarks` (data/benchmarks), so
# that each evaluate stage depends on its own folder only (dvc.yaml): adding SIDD's two .mat files re-runs
# evaluate@denoise and leaves evaluate@deblur alone, which on real GoPro is hours of CPU. DVC needs a
# dependency to exist, so `imrestore data` keeps a README in each.
# data/benchmarks/<dataset>/README.md, written by `imrestore data`: evaluate@<task> depends on the folder.
BENCHMARK_READMES = {
    "gopro": "GoPro has no benchmark files apart from its test split, which the pipeline evaluates already.\n"
             "This folder exists because evaluate@deblur depends on it (dvc.yaml); keep it.\n",
    "sidd": "Put SIDD's sRGB validation benchmark here: ValidationNoisyBlocksSrgb.mat and\n"
            "ValidationGtBlocksSrgb.mat. Then `dvc add data`; the next `dvc repro` re-runs evaluate@denoise only\n"
            "and scores all 1280 blocks (README, \"Real data\").\n",
}


def sidd_benchmark_folder(benchmarks: Path) -> Path:
    """`benchmarks/sidd`, where evaluate@denoise looks; refuses SIDD files left anywhere else below `benchmarks`
    (where versions before the per-dataset folders looked), since they would be ignored without a word."""
    folder = Path(benchmarks) / "sidd"
    if Path(benchmarks).is_dir():
        for paths in _find_files(Path(benchmarks), SIDD_VALIDATION_FILES).values():
            for path in paths:
                if folder.resolve() not in path.resolve().parents:
                    raise ImrestoreError(
                        f"{path}: SIDD's validation files belong in {folder}/, the folder evaluate@denoise reads "
                        f"(and the only one it depends on); move them there and run `dvc add data`"
                    )
    return folder


def find_sidd_validation(folder: Path) -> tuple[Path, Path] | None:
    """(noisy, gt) paths of the SIDD validation files in `folder` or anywhere below it; None if neither is there.

    The benchmark is optional, so a folder that does not exist simply holds neither file. Raises ImrestoreError
    when `folder` is a file, when only one of the two is found, or when either is found more than once (which
    copy to score on is not a guess to make silently).
    """
    folder = Path(folder)
    if not folder.exists():
        return None
    if not folder.is_dir():
        wanted = " and ".join(SIDD_VALIDATION_FILES)
        raise ImrestoreError(f"{folder}: expected a folder to search for {wanted}, found a file")
    found = _find_files(folder, SIDD_VALIDATION_FILES)
    missing = [name for name, paths in found.items() if not paths]
    if len(missing) == len(SIDD_VALIDATION_FILES):
        return None
    if missing:
        present = [str(path) for paths in found.values() for path in paths]
        raise ImrestoreError(
            f"{folder}: expected both SIDD validation files, found {', '.join(present)} but not {missing[0]}"
        )
    repeated = {name: paths for name, paths in found.items() if len(paths) > 1}
    if repeated:
        listing = "; ".join(f"{name} at {', '.join(str(p) for p in paths)}" for name, paths in repeated.items())
        raise ImrestoreError(f"{folder}: expected one copy of each SIDD validation file, found several: {listing}")
    noisy_name, gt_name = SIDD_VALIDATION_FILES
    return found[noisy_name][0], found[gt_name][0]


def _unreadable(path: Path, error: BaseException) -> ImrestoreError:
    detail = f"{type(error).__name__}: {error}".rstrip(": ")
    return ImrestoreError(
        f"{path}: expected a complete MATLAB .mat file (v5, or v7.3/HDF5), found one that cannot be read "
        f"(is it truncated or not a MAT file?): {detail}"
    )


def _missing_key(path: Path, key: str, keys: list[str]) -> ImrestoreError:
    holds = f"the variables {', '.join(repr(k) for k in keys)}" if keys else "no variables (is it truncated?)"
    return ImrestoreError(f"{path}: expected a variable {key!r}, found {holds}")


def _read_v5(path: Path, key: str) -> np.ndarray:
    # variable_names: a 250 MB benchmark file is read once, and only the array asked for.
    contents = scipy.io.loadmat(path, variable_names=[key])
    if key not in contents:
        raise _missing_key(path, key, [name for name, _, _ in scipy.io.whosmat(path)])
    return contents[key]


def _read_v73(path: Path, key: str) -> np.ndarray:
    with h5py.File(path, "r") as mat:
        if key not in mat:
            raise _missing_key(path, key, [name for name in mat if name not in _MATLAB_INTERNAL_KEYS])
        node = mat[key]
        if not isinstance(node, h5py.Dataset):
            raise ImrestoreError(f"{path}: expected {key!r} to be a numeric array, found a MATLAB struct or cell")
        # Column-major on disk: reverse the axes with a view, not a copy of a 250 MB array.
        return np.asarray(node[()]).T


def read_mat_array(path: Path, key: str | None = None) -> np.ndarray:
    """The array stored under `key` (default: the file's stem) in a MATLAB .mat file, v5 or v7.3.

    The axes are MATLAB's, in both formats; the array is column-major (Fortran-ordered) as stored, not copied.
    """
    path = Path(path)
    key = path.stem if key is None else key
    if not path.is_file():
        raise ImrestoreError(f"{path}: expected a MATLAB .mat file, found {'a folder' if path.is_dir() else 'nothing'}")
    try:
        try:
            return _read_v5(path, key)
        except NotImplementedError:  # scipy's answer to a v7.3 (HDF5) file
            return _read_v73(path, key)
    except (ImrestoreError, MemoryError):
        raise
    except Exception as error:  # a damaged file can fail anywhere inside scipy or h5py
        raise _unreadable(path, error) from error


def _check_blocks(array: np.ndarray, path: Path, key: str) -> None:
    expected = f"(images, blocks, height, width, 3) uint8 RGB blocks, {SIDD_VALIDATION_SHAPE} as published"
    if not isinstance(array, np.ndarray) or array.dtype.kind in "OV":
        raise ImrestoreError(f"{path}: expected {key!r} to hold {expected}, found a MATLAB cell or struct")
    if array.ndim != 5 or array.shape[-1] != 3:
        raise ImrestoreError(f"{path}: expected {key!r} to hold {expected}, found shape {array.shape}")
    if array.dtype != np.uint8:
        raise ImrestoreError(f"{path}: expected {key!r} to hold {expected}, found dtype {array.dtype}")


@dataclass(frozen=True)
class SiddValidation:
    """The SIDD validation blocks: `noisy` and `gt` are (images, blocks, H, W, 3) uint8 arrays of equal shape."""

    noisy: np.ndarray
    gt: np.ndarray
    noisy_path: Path
    gt_path: Path

    def __post_init__(self) -> None:
        _check_blocks(self.noisy, self.noisy_path, self.noisy_path.stem)
        _check_blocks(self.gt, self.gt_path, self.gt_path.stem)
        if self.noisy.shape != self.gt.shape:
            raise ImrestoreError(
                f"{self.noisy_path} and {self.gt_path}: expected arrays of the same shape, "
                f"found {self.noisy.shape} and {self.gt.shape}"
            )

    @property
    def n_images(self) -> int:
        return self.noisy.shape[0]

    @property
    def n_blocks(self) -> int:
        """Blocks in all: images × blocks per image (1280 for the published benchmark)."""
        return self.noisy.shape[0] * self.noisy.shape[1]

    def blocks(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """(name, noisy, gt) per block, image-major; name "IIII_BB" holds the 0-based array indices.

        The blocks are H×W×3 uint8 views into `noisy` and `gt`, not copies, so listing all 1280 costs no memory;
        after `load_sidd_validation` they are C-contiguous, ready for torch.from_numpy or an image writer.
        """
        for image in range(self.noisy.shape[0]):
            for block in range(self.noisy.shape[1]):
                yield f"{image:04d}_{block:02d}", self.noisy[image, block], self.gt[image, block]


def _read_blocks(path: Path) -> np.ndarray:
    array = read_mat_array(path)
    _check_blocks(array, path, path.stem)
    # Both MAT formats hand back a column-major layout, in which every block is strided. One C-order copy now
    # (transiently 2× one file, ~500 MB for the published one) makes every block a contiguous view later.
    return np.ascontiguousarray(array)


def load_sidd_validation(noisy: Path, gt: Path) -> SiddValidation:
    """Read and check both SIDD validation files (each under the key named like its stem)."""
    noisy, gt = Path(noisy), Path(gt)
    return SiddValidation(noisy=_read_blocks(noisy), gt=_read_blocks(gt), noisy_path=noisy, gt_path=gt)
