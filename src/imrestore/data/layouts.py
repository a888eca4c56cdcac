"""The upstream directory layouts of GoPro and SIDD, and how to list their input/target pairs.

Real archives and the embedded sample are written in exactly these layouts, so everything downstream of
`download` runs the same code on both. A layout that does not match says what it expected and what it found.

GoPro:  GOPRO_Large/{train,test}/<SEQUENCE>/{blur,blur_gamma,sharp}/NNNNNN.png
SIDD:   SIDD_Small_sRGB_Only/Data/<NNNN_SSS_CC_IIIII_TTTTT_LLLL_B>/{GT,NOISY}_SRGB_010.PNG (+ Scene_Instances.txt)
        SIDD-Medium names its files NNNN_GT_SRGB_010.PNG, NNNN_NOISY_SRGB_011.PNG, ... (two captures each).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imrestore.errors import ImrestoreError

DATASETS = ("gopro", "sidd")
TASKS = {"deblur": "gopro", "denoise": "sidd"}  # each restoration task and the dataset it trains and tests on
GOPRO_ROOT = "GOPRO_Large"
GOPRO_SPLITS = ("train", "test")
GOPRO_FOLDERS = ("blur", "blur_gamma", "sharp")
SIDD_ROOTS = ("SIDD_Small_sRGB_Only", "SIDD_Medium_Srgb")
SIDD_CAMERAS = ("GP", "IP", "S6", "N6", "G4")
SIDD_BRIGHTNESS = ("L", "N", "H")

# Scene-instance number, scene, camera, ISO, shutter, illuminant temperature (K), brightness.
_SIDD_FOLDER = re.compile(r"^(\d{4})_(\d{3})_([A-Z0-9]{2})_(\d{5})_(\d{5})_(\d{4})_([LNH])$")
_SIDD_FILE = re.compile(r"^(?:\d{4}_)?(GT|NOISY)_SRGB_(\d{3})\.PNG$", re.IGNORECASE)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass(frozen=True)
class Pair:
    """One input/target pair as the layout names it. A missing partner is kept (as None) so that
    validation can report every problem at once instead of stopping at the first."""

    pair_id: str
    split: str  # GoPro: the official split; SIDD: "all" (the split stage decides)
    group: str  # what must not straddle splits: GoPro sequence, SIDD scene
    input: Path | None
    target: Path | None
    meta: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class SiddInstance:
    instance: int
    scene: int
    camera: str
    iso: int
    shutter: int
    illuminant_k: int
    brightness: str

    @classmethod
    def parse(cls, folder: str) -> SiddInstance:
        match = _SIDD_FOLDER.match(folder)
        if not match:
            raise ImrestoreError(
                f"SIDD folder name {folder!r} does not follow NNNN_SSS_CC_IIIII_TTTTT_LLLL_B "
                "(instance, scene, camera, ISO, shutter, illuminant, brightness), e.g. 0001_001_S6_00100_00060_3200_L"
            )
        inst, scene, camera, iso, shutter, temp, bright = match.groups()
        return cls(int(inst), int(scene), camera, int(iso), int(shutter), int(temp), bright)


def layout_root(raw_dir: Path, dataset: str) -> Path:
    """Return the dataset's top folder inside `raw_dir` (e.g. raw_dir/GOPRO_Large)."""
    candidates = [GOPRO_ROOT] if dataset == "gopro" else list(SIDD_ROOTS)
    for name in candidates:
        if (raw_dir / name).is_dir():
            return raw_dir / name
    raise ImrestoreError(
        f"expected {' or '.join(candidates)}/ in {raw_dir}, found {_listing(raw_dir)}; "
        f"the {dataset} source must unpack to the upstream layout (README, 'Real data')"
    )


def find_layout_root(folder: Path, dataset: str, max_depth: int = 3) -> Path:
    """The dataset's top folder: `folder` itself when it has the name (a local copy), else the one in it that
    `check_member_layout` would pick (a freshly extracted archive, which may wrap it in up to `max_depth` folders)."""
    if folder.name in _root_names(dataset):
        return folder
    paths = [p.relative_to(folder).as_posix() + ("/" if p.is_dir() else "") for p in sorted(folder.rglob("*"))]
    return folder / _find_root(_Tree.of(paths), dataset, max_depth, where=str(folder))


def check_layout(root: Path, dataset: str) -> None:
    """Fail early, with the expected pattern, when `root` (a folder on disk) is not the upstream layout."""
    paths = [p.relative_to(root.parent).as_posix() + ("/" if p.is_dir() else "") for p in root.rglob("*")]
    _check_tree(_Tree.of(paths), root.name, dataset)


def check_member_layout(names: Sequence[str], dataset: str, max_depth: int = 3) -> None:
    """`check_layout` for an archive before it is extracted, judged from its member paths ('a/b/c').

    The archive may wrap the dataset's top folder in up to `max_depth` folders, as `find_layout_root` allows.
    Refusing here means a wrong archive writes nothing, however large it would have expanded.
    """
    _find_root(_Tree.of(names), dataset, max_depth, where="the archive")


def _find_root(tree: _Tree, dataset: str, max_depth: int, where: str) -> str:
    """The shallowest folder of `tree` with the dataset's top-folder name, under at most `max_depth` wrapping
    folders, that holds the upstream layout. Several can have the name: an archive of the folder an earlier unzip
    made holds GOPRO_Large/GOPRO_Large/train/…, and the outer one is only a wrapper. Raises the layout error of
    the shallowest candidate when none holds the layout, or says that none was found."""
    roots = _root_names(dataset)
    frontier, first_error = [""], None
    for _ in range(max_depth + 1):  # depth 1 is the top level: no wrapper; depth max_depth + 1: max_depth of them
        frontier = [child for folder in frontier for child in tree.subfolders(folder)]
        for folder in frontier:
            if folder.rpartition("/")[2] not in roots:
                continue
            try:
                _check_tree(tree, folder, dataset)
                return folder
            except ImrestoreError as error:
                first_error = first_error or error
    if first_error is not None:
        raise first_error
    raise ImrestoreError(
        f"expected {' or '.join(sorted(roots))}/ in {where}, at most {max_depth} folder(s) deep, found "
        f"{tree.listing('')}; the {dataset} source must unpack to the upstream layout (README, 'Real data')"
    )


def _root_names(dataset: str) -> set[str]:
    if dataset not in DATASETS:
        raise ImrestoreError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    return {GOPRO_ROOT} if dataset == "gopro" else set(SIDD_ROOTS)


@dataclass
class _Tree:
    """Folders and what they hold, from relative paths; a folder is anything that holds something."""

    children: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, paths: Sequence[str]) -> _Tree:
        tree = cls()
        for path in paths:
            parts = [part for part in path.split("/") if part]
            for depth in range(len(parts)):
                parent = "/".join(parts[:depth])
                tree.children.setdefault(parent, set()).add("/".join(parts[: depth + 1]))
            if path.endswith("/"):  # a folder, even an empty one
                tree.children.setdefault("/".join(parts), set())
        return tree

    def is_folder(self, path: str) -> bool:
        return path in self.children

    def subfolders(self, folder: str) -> list[str]:
        return sorted(child for child in self.children.get(folder, ()) if self.is_folder(child))

    def listing(self, folder: str, limit: int = 8) -> str:
        """What `folder` holds, as paths from the top (so `GOPRO_Large/train/zeros.bin`, not `zeros.bin`)."""
        names = sorted(c + ("/" if self.is_folder(c) else "") for c in self.children.get(folder, ()))
        if not names:
            return f"nothing in {folder or 'the top folder'}/" if self.is_folder(folder) else f"no folder {folder}/"
        shown = ", ".join(names[:limit])
        return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


def _check_tree(tree: _Tree, root: str, dataset: str) -> None:
    """The upstream layout's rules, on a `_Tree` whose top folder is `root` (a path within the tree)."""
    if dataset == "gopro":
        for split in GOPRO_SPLITS:
            split_dir = f"{root}/{split}"
            sequences = tree.subfolders(split_dir)
            if not sequences:
                found = tree.listing(split_dir if tree.is_folder(split_dir) else root)
                raise ImrestoreError(f"expected {split_dir}/<SEQUENCE>/{{{','.join(GOPRO_FOLDERS)}}}/, found {found}")
            for seq in sequences:
                missing = [f for f in GOPRO_FOLDERS if not tree.is_folder(f"{seq}/{f}")]
                if missing:
                    raise ImrestoreError(
                        f"expected {root}/{split}/*/{{{','.join(GOPRO_FOLDERS)}}}, found {seq} without "
                        f"{', '.join(missing)} (it holds {tree.listing(seq)})"
                    )
    elif dataset == "sidd":
        instances = tree.subfolders(f"{root}/Data")
        if not instances:
            raise ImrestoreError(f"expected {root}/Data/<scene instance>/GT_SRGB_010.PNG, found {tree.listing(root)}")
        for instance in instances:
            SiddInstance.parse(instance.rpartition("/")[2])
    else:
        _root_names(dataset)  # raises: unknown dataset


def list_pairs(root: Path, dataset: str, gopro_input: str = "blur") -> list[Pair]:
    """All input/target pairs in a checked layout, in a deterministic order."""
    check_layout(root, dataset)
    return _gopro_pairs(root, gopro_input) if dataset == "gopro" else _sidd_pairs(root)


def _gopro_pairs(root: Path, input_folder: str) -> list[Pair]:
    if input_folder not in ("blur", "blur_gamma"):
        raise ImrestoreError(f"GoPro input folder must be 'blur' or 'blur_gamma', found {input_folder!r}")
    pairs = []
    for split in GOPRO_SPLITS:
        for seq in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            inputs = _images_by_name(seq / input_folder)
            targets = _images_by_name(seq / "sharp")
            for name in sorted(inputs.keys() | targets.keys()):
                pairs.append(
                    Pair(
                        pair_id=f"{split}/{seq.name}/{Path(name).stem}",
                        split=split,
                        group=seq.name,
                        input=inputs.get(name),
                        target=targets.get(name),
                        meta={"sequence": seq.name, "frame": Path(name).stem},
                    )
                )
    return pairs


def _sidd_pairs(root: Path) -> list[Pair]:
    pairs = []
    for folder in sorted(p for p in (root / "Data").iterdir() if p.is_dir()):
        info = SiddInstance.parse(folder.name)
        by_capture: dict[str, dict[str, Path]] = {}
        for path in sorted(folder.iterdir()):
            match = _SIDD_FILE.match(path.name)
            if match:
                role, capture = match.group(1).upper(), match.group(2)
                by_capture.setdefault(capture, {})[role] = path
        if not by_capture:
            raise ImrestoreError(f"expected GT_SRGB_010.PNG and NOISY_SRGB_010.PNG in {folder}, found {_listing(folder)}")
        for capture, files in sorted(by_capture.items()):
            pairs.append(
                Pair(
                    pair_id=f"{folder.name}/{capture}",
                    split="all",
                    group=f"{info.scene:03d}",
                    input=files.get("NOISY"),
                    target=files.get("GT"),
                    meta={
                        "scene_instance": folder.name,
                        "scene": info.scene,
                        "camera": info.camera,
                        "iso": info.iso,
                        "shutter": info.shutter,
                        "illuminant_k": info.illuminant_k,
                        "brightness": info.brightness,
                        "capture": capture,
                    },
                )
            )
    return pairs


def _images_by_name(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.name: p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES}


def _listing(folder: Path, limit: int = 8) -> str:
    if not folder.is_dir():
        return f"no folder {folder}"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return f"an empty folder {folder}"
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")
