"""The upstream directory layouts of GoPro and SIDD, and how to list their input/target pairs.

Real archives and the embedded sample are written in exactly these layouts, so everything downstream of
`download` runs the same code on both. A layout that does not match says what it expected and what it found.

GoPro:  GOPRO_Large/{train,test}/<SEQUENCE>/{blur,blur_gamma,sharp}/NNNNNN.png
SIDD:   SIDD_Small_sRGB_Only/Data/<NNNN_SSS_CC_IIIII_TTTTT_LLLL_B>/{GT,NOISY}_SRGB_010.PNG (+ Scene_Instances.txt)
        SIDD-Medium names its files NNNN_GT_SRGB_010.PNG, NNNN_NOISY_SRGB_011.PNG, ... (two captures each).
"""

from __future__ import annotations

import re
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


def find_layout_root(extracted: Path, dataset: str, max_depth: int = 3) -> Path:
    """Find the dataset's top folder in a freshly extracted archive, which may wrap it in extra folders."""
    names = {GOPRO_ROOT} if dataset == "gopro" else set(SIDD_ROOTS)
    frontier = [extracted]
    for _ in range(max_depth + 1):
        for folder in frontier:
            if folder.name in names and folder.is_dir():
                return folder
        frontier = [child for folder in frontier for child in sorted(folder.iterdir()) if child.is_dir()]
    return layout_root(extracted, dataset)  # raises with what was found


def check_layout(root: Path, dataset: str) -> None:
    """Fail early, with the expected pattern, when `root` is not the upstream layout."""
    if dataset == "gopro":
        for split in GOPRO_SPLITS:
            sequences = sorted(p for p in (root / split).glob("*") if p.is_dir())
            if not sequences:
                raise ImrestoreError(f"expected {GOPRO_ROOT}/{split}/<SEQUENCE>/sharp, found {_listing(root)}")
            for seq in sequences:
                missing = [f for f in GOPRO_FOLDERS if not (seq / f).is_dir()]
                if missing:
                    raise ImrestoreError(
                        f"expected {GOPRO_ROOT}/{split}/*/{{{','.join(GOPRO_FOLDERS)}}}, "
                        f"found {seq.relative_to(root.parent)} without {', '.join(missing)} "
                        f"(it has {_listing(seq)})"
                    )
    elif dataset == "sidd":
        data = root / "Data"
        instances = sorted(p for p in data.glob("*") if p.is_dir()) if data.is_dir() else []
        if not instances:
            raise ImrestoreError(f"expected {root.name}/Data/<scene instance>/GT_SRGB_010.PNG, found {_listing(root)}")
        for inst in instances:
            SiddInstance.parse(inst.name)
    else:
        raise ImrestoreError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")


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
