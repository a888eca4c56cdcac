"""The embedded default input: GoPro-like and SIDD-like datasets synthesised from photographs inside scikit-image.

scikit-image ships a few real colour photographs in its wheel. `materialise_photos` copies them byte for byte
into the repository's `data/sample_photos/` (which DVC tracks), and `make_gopro_sample` / `make_sidd_sample`
turn them into datasets in the exact upstream directory layouts, using the physics in `degradations`. The
result depends only on the photos, the config and its seed: the PNG bytes are identical from run to run and
for any number of worker processes.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imrestore import atomic
from imrestore.acquire import degradations as deg
from imrestore.errors import ImrestoreError
from imrestore.params import Section, integer, number, param
from imrestore.progress import progress_bar

# scikit-image data file → credit and licence, in the order the sample uses them.
SAMPLE_PHOTOS: dict[str, str] = {
    "astronaut.png": "Astronaut Eileen Collins; NASA; public domain",
    "chelsea.png": "Chelsea the cat; Stefan van der Walt; CC0",
    "coffee.png": "Cup of coffee; Rachel Michetti; CC0",
    "hubble_deep_field.jpg": "Hubble eXtreme Deep Field; NASA/HubbleSite; public domain",
    "ihc.png": "Immunohistochemistry (IHC) staining; Center for Microscopy and Molecular Imaging (CMMI); "
    "no known copyright restrictions",
    "rocket.jpg": "Falcon 9 rocket launch; SpaceX; public domain (CC0)",
}
PHOTO_DIR_NAME = "sample_photos"
GOPRO_ROOT = "GOPRO_Large"
GOPRO_FOLDERS = ("blur", "blur_gamma", "sharp")
SIDD_ROOT = "SIDD_Small_sRGB_Only"
SIDD_GT_NAME = "GT_SRGB_010.PNG"
SIDD_NOISY_NAME = "NOISY_SRGB_010.PNG"
SIDD_INDEX_NAME = "Scene_Instances.txt"
# zlib level 1: about 4× faster than Pillow's default 6 on these frames, for files ~15% larger. Fixed, like
# every other encoder setting, so the bytes are reproducible.
PNG_COMPRESS_LEVEL = 1


# --------------------------------------------------------------------------------------------------------------
# The photographs
# --------------------------------------------------------------------------------------------------------------


def materialise_photos(data_dir: Path) -> list[Path]:
    """Copy the sample photographs byte for byte from scikit-image to `data_dir/sample_photos/<name>`.

    Files already identical are left alone, so the copy is idempotent and DVC sees no change. Returns the
    photo paths in `SAMPLE_PHOTOS` order.
    """
    source_dir = importlib.resources.files("skimage.data")
    target_dir = Path(data_dir) / PHOTO_DIR_NAME
    paths = []
    for name in SAMPLE_PHOTOS:
        source = source_dir / name
        if not source.is_file():
            import skimage

            raise ImrestoreError(
                f"scikit-image {skimage.__version__} does not ship skimage/data/{name}: expected the sample "
                f"photographs {', '.join(SAMPLE_PHOTOS)} inside its wheel. Install the scikit-image version "
                "that requirements.lock pins."
            )
        data = source.read_bytes()
        target = target_dir / name
        if not (target.is_file() and target.read_bytes() == data):
            atomic.write_bytes(target, data)
        paths.append(target)
    return paths


def _missing_photo_error(path: Path) -> ImrestoreError:
    return ImrestoreError(
        f"{path}: sample photograph not found. Expected the {len(SAMPLE_PHOTOS)} photographs "
        f"{', '.join(SAMPLE_PHOTOS)} in {path.parent}. Run `make data` to copy them from scikit-image."
    )


def _unreadable_photo_error(path: Path, error: OSError) -> ImrestoreError:
    return ImrestoreError(
        f"{path}: expected a readable PNG or JPEG photograph, found an unreadable file ({error}). "
        "Run `make data` to copy it again from scikit-image."
    )


def _read_photo(path: Path) -> np.ndarray:
    """One photograph as an H×W×3 uint8 RGB array."""
    if not path.is_file():
        raise _missing_photo_error(path)
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except OSError as error:
        raise _unreadable_photo_error(path, error)


def load_photos(photo_dir: Path) -> dict[str, np.ndarray]:
    """All sample photographs as uint8 RGB arrays, keyed by file name in `SAMPLE_PHOTOS` order."""
    return {name: _read_photo(Path(photo_dir) / name) for name in SAMPLE_PHOTOS}


def photo_sizes(photo_dir: Path) -> dict[str, tuple[int, int]]:
    """(width, height) of every sample photograph, read from the headers without decoding the pixels."""
    sizes = {}
    for name in SAMPLE_PHOTOS:
        path = Path(photo_dir) / name
        if not path.is_file():
            raise _missing_photo_error(path)
        try:
            with Image.open(path) as image:
                sizes[name] = image.size
        except OSError as error:
            raise _unreadable_photo_error(path, error)
    return sizes


# --------------------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoproSampleConfig(Section):
    """How to synthesise the GoPro-like deblurring sample (defaults: 32 train and 16 test pairs of 640×360)."""

    SECTION = "download.gopro.sample"

    seed: int = param(0, integer(minimum=0))
    train_sequences: int = param(4, integer(minimum=1, maximum=999))
    test_sequences: int = param(2, integer(minimum=1, maximum=999))
    frames_per_sequence: int = param(8, integer(minimum=1, maximum=100_000))
    width: int = param(640, integer(minimum=16, maximum=8192))
    height: int = param(360, integer(minimum=16, maximum=8192))
    min_subframes: int = param(7, integer(minimum=1, maximum=99))
    max_subframes: int = param(13, integer(minimum=1, maximum=99))
    # RMS camera motion per 240 fps sub-frame. 1.0 puts the default sample's blurry test frames at 24.9 dB, near
    # GoPro's test set (about 25.6 dB); 2.0 gave 22.0 dB, heavier blur than GoPro's.
    shake_px: float = param(1.0, number(minimum=0.0, maximum=50.0))
    max_shift_px: float = param(48.0, number(minimum=0.0, maximum=1000.0))  # trajectory bound (each axis)
    max_rotation_deg: float = param(1.0, number(minimum=0.0, maximum=10.0))  # roll bound

    @classmethod
    def check_consistency(cls, values: dict[str, Any], fail: Callable[[str, str], None]) -> None:
        if values["max_subframes"] < values["min_subframes"]:
            fail("max_subframes", f"an integer ≥ min_subframes ({values['min_subframes']})")

    def expected_pairs(self) -> dict[str, int]:
        """Blurred/sharp pairs per official split."""
        return {
            "train": self.train_sequences * self.frames_per_sequence,
            "test": self.test_sequences * self.frames_per_sequence,
        }


@dataclass(frozen=True)
class SiddSampleConfig(Section):
    """How to synthesise the SIDD-like denoising sample (defaults: 10 scenes × 4 instances of 256×256)."""

    SECTION = "download.sidd.sample"

    seed: int = param(0, integer(minimum=0))
    scenes: int = param(10, integer(minimum=1, maximum=999))
    instances_per_scene: int = param(4, integer(minimum=1, maximum=9999))
    width: int = param(256, integer(minimum=16, maximum=8192))
    height: int = param(256, integer(minimum=16, maximum=8192))

    @classmethod
    def check_consistency(cls, values: dict[str, Any], fail: Callable[[str, str], None]) -> None:
        if values["scenes"] * values["instances_per_scene"] > 9999:
            fail("instances_per_scene", f"at most {9999 // values['scenes']}, so that scenes × instances_per_scene "
                 f"≤ 9999 (4-digit instance numbers; scenes is {values['scenes']})")

    def expected_pairs(self) -> dict[str, int]:
        """SIDD-Small has no official split: all pairs live in one pool."""
        return {"all": self.scenes * self.instances_per_scene}


# --------------------------------------------------------------------------------------------------------------
# Running tasks with a progress bar, in one process or several
# --------------------------------------------------------------------------------------------------------------


def _default_workers(n_tasks: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, n_tasks))


def _run_tasks(
    function: Callable[..., None], tasks: Sequence[tuple], description: str, unit: str, workers: int
) -> None:
    """Call `function(*task)` for every task under a rich progress bar.

    Each task writes its own files and draws its randomness from its own seed, so the output does not depend
    on the worker count or on completion order. Workers are spawned (not forked) so that no lock held by a
    thread of the caller is inherited.
    """
    with progress_bar(description, total=len(tasks), unit=unit) as advance:
        if workers <= 1:
            for task in tasks:
                function(*task)
                advance(1)
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(function, *task) for task in tasks]
            try:
                for future in as_completed(futures):
                    future.result()
                    advance(1)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


def _save_png(path: Path, image: np.ndarray) -> None:
    """8-bit RGB PNG with fixed encoder settings and no metadata chunks, so equal pixels give equal bytes."""
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(
        path, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False
    )


def _balanced(rng: np.random.Generator, values: Sequence[Any], n: int) -> list[Any]:
    """n draws from `values` as concatenated random permutations: every value appears once per len(values)."""
    out: list[Any] = []
    while len(out) < n:
        out.extend(values[i] for i in rng.permutation(len(values)))
    return out[:n]


# --------------------------------------------------------------------------------------------------------------
# GoPro-like deblurring sample
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoproSequencePlan:
    """Everything that decides one synthetic GoPro sequence; the frames follow from it deterministically."""

    split: str  # "train" or "test"
    name: str  # GoPro-style, e.g. GOPR0372_07_00
    photo: str  # SAMPLE_PHOTOS key
    photo_size: tuple[int, int]  # (width, height) the photo is resized to before rendering
    centre: tuple[float, float]  # (x, y) in the resized photo around which the camera shakes
    subframes: int  # 240 fps frames averaged into one blurred frame
    first_frame: int  # number of the first frame's file
    shake_px: float  # RMS motion per sub-frame for this sequence
    trajectory_seed: int


def _split_photos(rng: np.random.Generator, cfg: GoproSampleConfig) -> dict[str, list[str]]:
    """Disjoint photo sets for train and test, sized like the sequence counts, so no content leaks across."""
    names = [list(SAMPLE_PHOTOS)[i] for i in rng.permutation(len(SAMPLE_PHOTOS))]
    total = cfg.train_sequences + cfg.test_sequences
    n_test = min(max(round(len(names) * cfg.test_sequences / total), 1), len(names) - 1)
    return {"test": names[:n_test], "train": names[n_test:]}


def _gopro_sequence_name(rng: np.random.Generator, taken: set[str]) -> str:
    while True:
        name = f"GOPR{rng.integers(300, 1000):04d}_{rng.integers(0, 12):02d}_{rng.integers(0, 2):02d}"
        if name not in taken:
            taken.add(name)
            return name


def plan_gopro_sample(sizes: Mapping[str, tuple[int, int]], cfg: GoproSampleConfig) -> list[GoproSequencePlan]:
    """Decide every sequence of the GoPro-like sample from the photo sizes (width, height) and the seed.

    Train and test draw on disjoint photos; within a split, sequences take the photos round-robin. A photo
    is enlarged only if the frame plus the trajectory margin does not fit in it.
    """
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x60960]))
    photos = _split_photos(rng, cfg)
    need_w, need_h = deg.required_photo_size(cfg.width, cfg.height, cfg.max_shift_px, cfg.max_rotation_deg)
    odd = [n for n in range(cfg.min_subframes, cfg.max_subframes + 1) if n % 2 == 1]
    subframe_choices = odd or list(range(cfg.min_subframes, cfg.max_subframes + 1))  # odd: a true middle frame
    taken: set[str] = set()
    plans = []
    for split, count in (("train", cfg.train_sequences), ("test", cfg.test_sequences)):
        for index in range(count):
            photo = photos[split][index % len(photos[split])]
            width, height = sizes[photo]
            scale = max(1.0, need_w / width, need_h / height)
            size = (max(need_w, math.ceil(width * scale - 1e-9)), max(need_h, math.ceil(height * scale - 1e-9)))
            lo_x, lo_y = (need_w - 1) / 2, (need_h - 1) / 2
            centre = (
                float(rng.uniform(lo_x, max(lo_x, size[0] - 1 - lo_x))),
                float(rng.uniform(lo_y, max(lo_y, size[1] - 1 - lo_y))),
            )
            plans.append(
                GoproSequencePlan(
                    split=split,
                    name=_gopro_sequence_name(rng, taken),
                    photo=photo,
                    photo_size=size,
                    centre=centre,
                    subframes=int(rng.choice(subframe_choices)),
                    first_frame=int(rng.integers(1, 400)),
                    shake_px=float(cfg.shake_px * rng.uniform(0.5, 1.5)),
                    trajectory_seed=int(rng.integers(2**63)),
                )
            )
    return plans


@functools.lru_cache(maxsize=2)
def _prepared_photo(path: str, size: tuple[int, int]) -> np.ndarray:
    """The photo resized (Lanczos, anti-aliased) to `size` as float32 in [0, 1], cached per process."""
    image = Image.fromarray(_read_photo(Path(path)))
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.float32) / np.float32(255.0)


def sequence_trajectory(plan: GoproSequencePlan, cfg: GoproSampleConfig) -> np.ndarray:
    """The whole sequence's camera path, one row per sub-frame; frame f uses rows f·n … f·n + n − 1."""
    return deg.camera_trajectory(
        np.random.default_rng(plan.trajectory_seed),
        cfg.frames_per_sequence * plan.subframes,
        speed_px=plan.shake_px,
        max_shift_px=cfg.max_shift_px,
        max_rotation_deg=cfg.max_rotation_deg,
    )


def render_gopro_frame(
    photo_path: str, plan: GoproSequencePlan, frame: int, cfg: GoproSampleConfig, seq_dir: str
) -> None:
    """Render one frame's sub-frames and write its sharp, blur and blur_gamma PNGs."""
    photo = _prepared_photo(photo_path, plan.photo_size)
    path = sequence_trajectory(plan, cfg)[frame * plan.subframes : (frame + 1) * plan.subframes]
    subframes = [
        deg.to_uint8(
            deg.render_view(photo, plan.centre[0] + dx, plan.centre[1] + dy, dtheta, cfg.width, cfg.height)
        )
        for dx, dy, dtheta in path
    ]
    sharp, blur, blur_gamma = deg.gopro_triplet(subframes)
    file_name = f"{plan.first_frame + frame:06d}.png"
    for folder, image in zip(GOPRO_FOLDERS, (blur, blur_gamma, sharp)):
        _save_png(Path(seq_dir) / folder / file_name, image)


def make_gopro_sample(photo_dir: Path, out_root: Path, cfg: GoproSampleConfig, *, workers: int | None = None) -> None:
    """Write `out_root/GOPRO_Large/{train,test}/<SEQ>/{blur,blur_gamma,sharp}/NNNNNN.png`.

    Sharp frames are the middle 240 fps sub-frame; `blur` averages the sub-frames as stored (sRGB),
    `blur_gamma` in linear light. `workers=None` uses one process per available core; workers are spawned, so
    a script that calls this needs the usual `if __name__ == "__main__":` guard.
    """
    plans = plan_gopro_sample(photo_sizes(photo_dir), cfg)
    tasks = []
    for plan in plans:
        seq_dir = Path(out_root) / GOPRO_ROOT / plan.split / plan.name
        for folder in GOPRO_FOLDERS:
            (seq_dir / folder).mkdir(parents=True, exist_ok=True)
        photo_path = str(Path(photo_dir) / plan.photo)
        tasks.extend((photo_path, plan, frame, cfg, str(seq_dir)) for frame in range(cfg.frames_per_sequence))
    try:
        _run_tasks(render_gopro_frame, tasks, "GoPro-like sample", "frames", workers or _default_workers(len(tasks)))
    finally:
        clear_photo_caches()


# --------------------------------------------------------------------------------------------------------------
# SIDD-like denoising sample
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiddInstancePlan:
    """Everything that decides one synthetic SIDD scene instance."""

    instance: int  # global, from 1
    scene: int  # from 1
    photo: str
    box: tuple[int, int, int, int]  # (left, top, right, bottom) crop of the photo
    camera: str
    iso: int
    shutter: int  # exposure time as 1/shutter s
    temperature_k: int
    brightness: str
    noise_seed: int
    # Each instance is its own capture: the phone is set up anew, so the scene lands a little differently on the
    # sensor. Without this, two instances with the same camera and illuminant would share a byte-identical GT.
    placement_px: tuple[float, float] = (0.0, 0.0)

    @property
    def folder(self) -> str:
        """SIDD folder name <instance>_<scene>_<camera>_<ISO>_<shutter>_<temperature>_<brightness>."""
        return (
            f"{self.instance:04d}_{self.scene:03d}_{self.camera}_{self.iso:05d}_{self.shutter:05d}_"
            f"{self.temperature_k:04d}_{self.brightness}"
        )


Box = tuple[int, int, int, int]  # (left, top, right, bottom)
MAX_PLACEMENT_PX = 0.5  # how far an instance's view may sit from its scene's crop, per axis


def _scene_boxes(sizes: Mapping[str, tuple[int, int]], cfg: SiddSampleConfig) -> list[tuple[str, Box]]:
    """cfg.scenes non-overlapping crops, taken round-robin across the photos (a centred grid in each)."""
    grids = {}
    for name, (width, height) in sizes.items():
        nx, ny = width // cfg.width, height // cfg.height
        x0, y0 = (width - nx * cfg.width) // 2, (height - ny * cfg.height) // 2
        grids[name] = [
            (x0 + i * cfg.width, y0 + j * cfg.height, x0 + (i + 1) * cfg.width, y0 + (j + 1) * cfg.height)
            for j in range(ny)
            for i in range(nx)
        ]
    capacity = sum(len(boxes) for boxes in grids.values())
    if capacity < cfg.scenes:
        per_photo = ", ".join(f"{name} {len(boxes)}" for name, boxes in grids.items())
        raise ImrestoreError(
            f"sidd sample: expected room for {cfg.scenes} non-overlapping {cfg.width}×{cfg.height} scenes in the "
            f"sample photographs, found only {capacity} ({per_photo}); lower scenes or the crop size"
        )
    scenes: list[tuple[str, Box]] = []
    for round_index in range(max(len(boxes) for boxes in grids.values())):
        for name, boxes in grids.items():
            if round_index < len(boxes) and len(scenes) < cfg.scenes:
                scenes.append((name, boxes[round_index]))
    return scenes


def plan_sidd_sample(sizes: Mapping[str, tuple[int, int]], cfg: SiddSampleConfig) -> list[SiddInstancePlan]:
    """Decide every scene instance of the SIDD-like sample from the photo sizes (width, height) and the seed.

    Cameras, ISOs, illuminants and brightness levels are drawn as shuffled rounds over their value lists,
    so each appears about equally often and all cameras appear once there are five instances.
    """
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x51DD]))
    scenes = _scene_boxes(sizes, cfg)
    n = cfg.scenes * cfg.instances_per_scene
    cameras = _balanced(rng, deg.CAMERAS, n)
    isos = _balanced(rng, deg.SIDD_ISOS, n)
    temperatures = _balanced(rng, deg.ILLUMINANTS_K, n)
    brightness = _balanced(rng, deg.BRIGHTNESS, n)
    seeds = rng.integers(2**63, size=n)
    placements = rng.uniform(-MAX_PLACEMENT_PX, MAX_PLACEMENT_PX, size=(n, 2))
    plans = []
    for k in range(n):
        photo, box = scenes[k // cfg.instances_per_scene]
        plans.append(
            SiddInstancePlan(
                instance=k + 1,
                scene=k // cfg.instances_per_scene + 1,
                photo=photo,
                box=box,
                camera=cameras[k],
                iso=isos[k],
                shutter=deg.shutter_denominator(isos[k], brightness[k]),
                temperature_k=temperatures[k],
                brightness=brightness[k],
                noise_seed=int(seeds[k]),
                placement_px=(float(placements[k, 0]), float(placements[k, 1])),
            )
        )
    return plans


@functools.lru_cache(maxsize=2)
def _cached_photo(path: str) -> np.ndarray:
    return _read_photo(Path(path))


def clear_photo_caches() -> None:
    """Drop the decoded photos the renderers keep (a few per process) once a sample or a batch is written."""
    _prepared_photo.cache_clear()
    _cached_photo.cache_clear()


def render_sidd_instance(photo_path: str, plan: SiddInstancePlan, instance_dir: str) -> None:
    """Synthesise one scene instance and write its GT and NOISY PNGs."""
    left, top, right, bottom = plan.box
    photo = _cached_photo(photo_path)
    pad = 4  # enough context for the bicubic kernel around a sub-pixel placement
    x0, y0 = max(left - pad, 0), max(top - pad, 0)
    region = deg.to_float(photo[y0 : bottom + pad, x0 : right + pad])
    dx, dy = plan.placement_px
    centre_x, centre_y = (left + right - 1) / 2 + dx - x0, (top + bottom - 1) / 2 + dy - y0
    crop = deg.to_uint8(deg.render_view(region, centre_x, centre_y, 0.0, right - left, bottom - top))
    gt, noisy = deg.sidd_pair(
        crop, plan.camera, plan.iso, plan.temperature_k, plan.brightness, np.random.default_rng(plan.noise_seed)
    )
    _save_png(Path(instance_dir) / SIDD_GT_NAME, gt)
    _save_png(Path(instance_dir) / SIDD_NOISY_NAME, noisy)


def make_sidd_sample(photo_dir: Path, out_root: Path, cfg: SiddSampleConfig, *, workers: int | None = None) -> None:
    """Write `out_root/SIDD_Small_sRGB_Only/Data/<folder>/{GT,NOISY}_SRGB_010.PNG` and `Scene_Instances.txt`.

    `workers=None` uses one process per available core once there is enough work to pay for starting them.
    """
    plans = plan_sidd_sample(photo_sizes(photo_dir), cfg)
    root = Path(out_root) / SIDD_ROOT
    tasks = []
    for plan in plans:
        instance_dir = root / "Data" / plan.folder
        instance_dir.mkdir(parents=True, exist_ok=True)
        tasks.append((str(Path(photo_dir) / plan.photo), plan, str(instance_dir)))
    if workers is None:
        # ~30 ms per 256² instance; starting a spawned worker costs about a second.
        pixels = len(tasks) * cfg.width * cfg.height
        workers = _default_workers(len(tasks)) if pixels > 16 * 2**20 else 1
    try:
        _run_tasks(render_sidd_instance, tasks, "SIDD-like sample", "pairs", workers)
    finally:
        clear_photo_caches()
    atomic.write_text(root / SIDD_INDEX_NAME, "".join(f"{plan.folder}\n" for plan in plans))

