"""The embedded sample: real scikit-image photographs → GoPro-like and SIDD-like datasets in upstream layouts."""

from __future__ import annotations

import dataclasses
import importlib.resources
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imrestore.acquire import degradations as deg
from imrestore.acquire import sample
from imrestore.errors import ImrestoreError

SEQUENCE_RE = re.compile(r"^GOPR\d{4}_\d{2}_\d{2}$")
FRAME_RE = re.compile(r"^\d{6}\.png$")
SIDD_FOLDER_RE = re.compile(r"^(\d{4})_(\d{3})_(GP|IP|S6|N6|G4)_(\d{5})_(\d{5})_(\d{4})_([LNH])$")

SMALL_GOPRO = dict(
    seed=3, train_sequences=3, test_sequences=2, frames_per_sequence=3, width=96, height=64,
    min_subframes=7, max_subframes=9, shake_px=2.0, max_shift_px=12.0,
)
SMALL_SIDD = dict(seed=1, scenes=6, instances_per_scene=2, width=64, height=64)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("data")
    sample.materialise_photos(data_dir)
    return data_dir / sample.PHOTO_DIR_NAME


@pytest.fixture(scope="module")
def gopro_cfg() -> sample.GoproSampleConfig:
    return sample.GoproSampleConfig.from_params(SMALL_GOPRO, "test.gopro")


@pytest.fixture(scope="module")
def gopro_root(photo_dir, gopro_cfg, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gopro")
    sample.make_gopro_sample(photo_dir, out, gopro_cfg, workers=1)
    return out


@pytest.fixture(scope="module")
def sidd_cfg() -> sample.SiddSampleConfig:
    return sample.SiddSampleConfig.from_params(SMALL_SIDD, "test.sidd")


@pytest.fixture(scope="module")
def sidd_root(photo_dir, sidd_cfg, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sidd")
    sample.make_sidd_sample(photo_dir, out, sidd_cfg, workers=1)
    return out


# ---------------------------------------------------------------------------------------------- photographs


def test_materialise_copies_byte_exact_and_is_idempotent(tmp_path):
    paths = sample.materialise_photos(tmp_path)
    source = importlib.resources.files("skimage.data")
    assert [p.name for p in paths] == list(sample.SAMPLE_PHOTOS)
    assert sorted(p.name for p in (tmp_path / "sample_photos").iterdir()) == sorted(sample.SAMPLE_PHOTOS)
    for path in paths:
        assert path.read_bytes() == (source / path.name).read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in paths}
    assert sample.materialise_photos(tmp_path) == paths
    assert {p: p.stat().st_mtime_ns for p in paths} == stamps  # identical files are not rewritten
    paths[0].write_bytes(b"truncated")
    sample.materialise_photos(tmp_path)
    assert paths[0].read_bytes() == (source / paths[0].name).read_bytes()  # a damaged copy is repaired


def test_load_photos_reads_rgb_uint8(photo_dir):
    photos = sample.load_photos(photo_dir)
    assert list(photos) == list(sample.SAMPLE_PHOTOS)
    for name, photo in photos.items():
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3, name
    assert photos["astronaut.png"].shape == (512, 512, 3)


def test_missing_photo_says_to_run_make_data(photo_dir, tmp_path, gopro_cfg, sidd_cfg):
    partial = tmp_path / "sample_photos"
    shutil.copytree(photo_dir, partial)
    (partial / "coffee.png").unlink()
    for call in (
        lambda: sample.load_photos(partial),
        lambda: sample.make_gopro_sample(partial, tmp_path / "out", gopro_cfg, workers=1),
        lambda: sample.make_sidd_sample(partial, tmp_path / "out", sidd_cfg, workers=1),
    ):
        with pytest.raises(ImrestoreError, match=r"coffee\.png.*`make data`"):
            call()


# ---------------------------------------------------------------------------------------------- configs


def test_configs_default_and_expected_pairs():
    assert sample.GoproSampleConfig.from_params({}, "x") == sample.GoproSampleConfig()
    assert sample.SiddSampleConfig.from_params(None, "x") == sample.SiddSampleConfig()
    assert sample.GoproSampleConfig().expected_pairs() == {"train": 32, "test": 16}
    assert sample.SiddSampleConfig().expected_pairs() == {"all": 40}
    cfg = sample.GoproSampleConfig.from_params({"frames_per_sequence": 5, "shake_px": 1}, "x")
    assert cfg.frames_per_sequence == 5 and cfg.shake_px == 1.0 and isinstance(cfg.shake_px, float)


@pytest.mark.parametrize(
    ("cls", "params", "message"),
    [
        (sample.GoproSampleConfig, {"frames": 8}, r"^params\.yaml: unknown key download\.gopro\.sample\.frames; "
                                                  r"expected one of .*frames_per_sequence"),
        (sample.GoproSampleConfig, {"frames_per_sequence": 0},
         r"^params\.yaml: download\.gopro\.sample\.frames_per_sequence must be an integer ≥ 1 .*found 0$"),
        (sample.GoproSampleConfig, {"seed": -1}, r"\.seed must be an integer ≥ 0, found -1$"),
        (sample.GoproSampleConfig, {"width": "640"}, r"\.width must be an integer .*found '640'$"),
        (sample.GoproSampleConfig, {"height": 360.0}, r"\.height must be an integer .*found 360\.0$"),
        (sample.GoproSampleConfig, {"train_sequences": True}, r"\.train_sequences must be .*found True$"),
        (sample.GoproSampleConfig, {"shake_px": -0.5}, r"\.shake_px must be a number ≥ 0\.0"),
        (sample.GoproSampleConfig, {"min_subframes": 9, "max_subframes": 7},
         r"\.max_subframes must be an integer ≥ min_subframes \(9\), found 7$"),
        (sample.SiddSampleConfig, {"scene": 3}, r"^params\.yaml: unknown key download\.gopro\.sample\.scene"),
        (sample.SiddSampleConfig, {"instances_per_scene": 0}, r"\.instances_per_scene must be an integer ≥ 1"),
        (sample.SiddSampleConfig, {"scenes": 100, "instances_per_scene": 100},
         r"\.instances_per_scene must be at most 99, so that scenes × instances_per_scene ≤ 9999 .*found 100$"),
        (sample.SiddSampleConfig, [1, 2], r"^params\.yaml: download\.gopro\.sample must be a mapping of height, "),
    ],
)
def test_from_params_rejects_bad_input_naming_the_key(cls, params, message):
    with pytest.raises(ImrestoreError, match=message):
        cls.from_params(params, "download.gopro.sample")


# ---------------------------------------------------------------------------------------------- GoPro sample


def test_gopro_layout_is_exactly_upstream(gopro_root, gopro_cfg):
    root = gopro_root / "GOPRO_Large"
    assert [p.name for p in gopro_root.iterdir()] == ["GOPRO_Large"]
    assert sorted(p.name for p in root.iterdir()) == ["test", "train"]
    names = set()
    for split, pairs in gopro_cfg.expected_pairs().items():
        sequences = sorted((root / split).iterdir())
        assert len(sequences) == {"train": 3, "test": 2}[split]
        count = 0
        for seq in sequences:
            assert SEQUENCE_RE.match(seq.name), seq.name
            names.add(seq.name)
            assert sorted(p.name for p in seq.iterdir()) == ["blur", "blur_gamma", "sharp"]
            files = [sorted(p.name for p in (seq / folder).iterdir()) for folder in sample.GOPRO_FOLDERS]
            assert files[0] == files[1] == files[2]
            assert all(FRAME_RE.match(f) for f in files[0])
            numbers = [int(f[:6]) for f in files[0]]
            assert numbers == list(range(numbers[0], numbers[0] + gopro_cfg.frames_per_sequence))
            for folder in sample.GOPRO_FOLDERS:
                with Image.open(seq / folder / files[0][0]) as image:
                    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (96, 64))
            count += len(files[0])
        assert count == pairs
    assert len(names) == 5  # sequence names are unique across splits


def test_gopro_plan_matches_folders_and_splits_photos(photo_dir, gopro_root, gopro_cfg):
    plans = sample.plan_gopro_sample(sample.photo_sizes(photo_dir), gopro_cfg)
    on_disk = {(p.parent.name, p.name) for p in (gopro_root / "GOPRO_Large").glob("*/*")}
    assert {(plan.split, plan.name) for plan in plans} == on_disk
    sizes = sample.photo_sizes(photo_dir)
    for seed in range(20):
        for cfg in (gopro_cfg, sample.GoproSampleConfig()):
            plans = sample.plan_gopro_sample(sizes, dataclasses.replace(cfg, seed=seed))
            train = {p.photo for p in plans if p.split == "train"}
            test = {p.photo for p in plans if p.split == "test"}
            assert train and test and not train & test


def test_gopro_photos_are_enlarged_only_as_needed(photo_dir):
    cfg = sample.GoproSampleConfig()
    sizes = sample.photo_sizes(photo_dir)
    need_w, need_h = deg.required_photo_size(cfg.width, cfg.height, cfg.max_shift_px, cfg.max_rotation_deg)
    for seed in range(5):
        for plan in sample.plan_gopro_sample(sizes, sample.GoproSampleConfig(seed=seed)):
            width, height = sizes[plan.photo]
            resized_w, resized_h = plan.photo_size
            assert resized_w >= need_w and resized_h >= need_h
            if width >= need_w and height >= need_h:
                assert plan.photo_size == (width, height)  # big enough: untouched
            else:
                assert resized_w <= need_w + 1 or resized_h <= need_h + 1  # one side is tight
                assert resized_w / width == pytest.approx(resized_h / height, rel=0.01)  # aspect kept


def test_gopro_frames_are_blurred_and_continue_one_trajectory(photo_dir, gopro_root, gopro_cfg):
    gamma_differs = []
    for seq in (gopro_root / "GOPRO_Large").glob("*/*"):
        for frame in sorted((seq / "sharp").iterdir()):
            sharp, blur, blur_gamma = (
                np.asarray(Image.open(seq / folder / frame.name)) for folder in ("sharp", "blur", "blur_gamma")
            )
            gray = [deg.to_float(x).mean(-1) for x in (sharp, blur)]
            energy = [np.mean(np.diff(g, axis=1) ** 2) + np.mean(np.diff(g, axis=0) ** 2) for g in gray]
            assert energy[1] < energy[0]
            gamma_differs.append(not np.array_equal(blur, blur_gamma))
    assert sum(gamma_differs) >= len(gamma_differs) / 2  # a frame with little motion may average alike
    plan = sample.plan_gopro_sample(sample.photo_sizes(photo_dir), gopro_cfg)[0]
    path = sample.sequence_trajectory(plan, gopro_cfg)
    assert path.shape == (gopro_cfg.frames_per_sequence * plan.subframes, 3)
    steps = np.linalg.norm(np.diff(path[:, :2], axis=0), axis=1)
    boundaries = steps[plan.subframes - 1 :: plan.subframes]  # from the last sub-frame of a frame to the next
    assert boundaries.max() <= steps.max()  # no jump between frames: the camera keeps moving smoothly
    assert plan.subframes % 2 == 1 and gopro_cfg.min_subframes <= plan.subframes <= gopro_cfg.max_subframes


# ---------------------------------------------------------------------------------------------- SIDD sample


def test_sidd_layout_is_exactly_upstream(sidd_root, sidd_cfg):
    root = sidd_root / "SIDD_Small_sRGB_Only"
    assert [p.name for p in sidd_root.iterdir()] == ["SIDD_Small_sRGB_Only"]
    assert sorted(p.name for p in root.iterdir()) == ["Data", "Scene_Instances.txt"]
    folders = sorted(p.name for p in (root / "Data").iterdir())
    assert len(folders) == sidd_cfg.expected_pairs()["all"] == 12
    assert (root / "Scene_Instances.txt").read_text().splitlines() == folders  # ordered by instance number
    fields = [SIDD_FOLDER_RE.match(name) for name in folders]
    assert all(fields), folders
    assert [int(m[1]) for m in fields] == list(range(1, 13))
    assert [int(m[2]) for m in fields] == [s for s in range(1, 7) for _ in range(2)]
    assert {m[3] for m in fields} == set(deg.CAMERAS)
    assert {int(m[4]) for m in fields} <= set(deg.SIDD_ISOS) and len({m[4] for m in fields}) >= 5
    assert {int(m[6]) for m in fields} <= {3200, 4400, 5500} and len({m[7] for m in fields}) == 3
    for name in folders:
        assert sorted(p.name for p in (root / "Data" / name).iterdir()) == ["GT_SRGB_010.PNG", "NOISY_SRGB_010.PNG"]
        for file in ("GT_SRGB_010.PNG", "NOISY_SRGB_010.PNG"):
            with Image.open(root / "Data" / name / file) as image:
                assert (image.format, image.mode, image.size) == ("PNG", "RGB", (64, 64))


def test_sidd_scenes_are_distinct_non_overlapping_crops(photo_dir, sidd_root, sidd_cfg):
    plans = sample.plan_sidd_sample(sample.photo_sizes(photo_dir), sidd_cfg)
    scenes = {plan.scene: (plan.photo, plan.box) for plan in plans}
    assert len(scenes) == 6 and len(set(scenes.values())) == 6
    assert len({photo for photo, _ in scenes.values()}) == 6  # round-robin: one crop per photo first
    for plan in plans:
        assert plan.box[2] - plan.box[0] == 64 and plan.box[3] - plan.box[1] == 64
    boxes = list(scenes.values())
    for i, (photo_a, a) in enumerate(boxes):
        for photo_b, b in boxes[i + 1 :]:
            if photo_a == photo_b:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    # Instances of one scene show the same crop: their ground truths are nearly equal, other scenes' are not.
    data = sidd_root / "SIDD_Small_sRGB_Only" / "Data"
    gt = {plan.instance: np.asarray(Image.open(data / plan.folder / "GT_SRGB_010.PNG"), dtype=float) for plan in plans}
    assert np.abs(gt[1] - gt[2]).mean() < 6 < np.abs(gt[1] - gt[3]).mean()
    # ... but never byte-identical: each instance is its own capture (validation rejects shared content).
    assert all(not np.array_equal(gt[1], gt[k]) for k in gt if k != 1)


def test_sidd_many_scenes_come_round_robin_from_large_photos(photo_dir):
    plans = sample.plan_sidd_sample(sample.photo_sizes(photo_dir), sample.SiddSampleConfig())
    photos = [plan.photo for plan in plans if plan.instance % 4 == 1]
    assert len(photos) == 10 and photos[:6] == list(sample.SAMPLE_PHOTOS)  # every photo once, then again
    assert len({(plan.photo, plan.box) for plan in plans}) == 10


def test_sidd_noisy_differs_from_gt_by_zero_mean_noise(sidd_root):
    biases = []
    for folder in (sidd_root / "SIDD_Small_sRGB_Only" / "Data").iterdir():
        gt = np.asarray(Image.open(folder / "GT_SRGB_010.PNG"), dtype=float)
        noisy = np.asarray(Image.open(folder / "NOISY_SRGB_010.PNG"), dtype=float)
        residual = noisy - gt
        assert residual.std() > 1.0
        biases.append(abs(residual.mean()))
        # Near black and white, clipping biases heavy noise (as in real sRGB); mid-tones stay nearly unbiased,
        # up to the small Jensen shift of the concave tone curve.
        mid = (gt >= 48) & (gt <= 207)
        if mid.mean() > 0.2:
            assert abs(residual[mid].mean()) < max(1.0, 0.25 * residual[mid].std())
    assert np.median(biases) < 1.5


@pytest.mark.parametrize("dataset", ["gopro", "sidd"])
def test_sample_is_deterministic_for_any_worker_count_and_seeded(dataset, request, photo_dir, tmp_path):
    make, config, small = {
        "gopro": (sample.make_gopro_sample, sample.GoproSampleConfig, SMALL_GOPRO),
        "sidd": (sample.make_sidd_sample, sample.SiddSampleConfig, SMALL_SIDD),
    }[dataset]
    first = request.getfixturevalue(f"{dataset}_root")
    make(photo_dir, tmp_path / "again", request.getfixturevalue(f"{dataset}_cfg"), workers=2)
    assert tree_bytes(tmp_path / "again") == tree_bytes(first)
    make(photo_dir, tmp_path / "other", config.from_params({**small, "seed": 4}, "test"), workers=1)
    assert tree_bytes(tmp_path / "other") != tree_bytes(first)


def test_sidd_too_many_scenes_is_a_clear_error(photo_dir, tmp_path):
    cfg = sample.SiddSampleConfig(scenes=50, width=256, height=256)
    with pytest.raises(ImrestoreError, match=r"expected room for 50 non-overlapping 256×256 scenes.*found only \d+"):
        sample.make_sidd_sample(photo_dir, tmp_path, cfg, workers=1)
