"""Tests for imrestore.data.datamodule: the sampling plan, both executors, validation batches, a real Trainer fit."""

from __future__ import annotations

import pickle
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from imrestore.data.datamodule import (
    TRANSFORMS,
    CropBatches,
    DeviceResidentBatches,
    PlanSampler,
    RestorationDataModule,
    Sampling,
    dihedral,
    fits_on_device,
    plan_batch,
)
from cache_builders import write_cache
from imrestore.errors import ImrestoreError

SIZE = 12  # patch size of the test caches


# --------------------------------------------------------------------------------------------- helpers


def random_patches(count: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """Train patches whose target is a fixed function of the input (255 - input); a val subset."""
    train = random_patches(20)
    val = random_patches(5, seed=1)
    return write_cache(tmp_path / "cache", {"train": (train, 255 - train), "val": (val, 255 - val)})


def batches(module: RestorationDataModule, epochs: tuple[int, ...] = (0,)) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """All training batches of the given epochs, as Lightning would see them."""
    loader = module.train_dataloader()
    out = []
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        out.extend((x.clone(), y.clone()) for x, y in loader)
    return out


def datamodule(root: Path, **kwargs) -> RestorationDataModule:
    settings = {"crop": 8, "batch_size": 4, "num_workers": 0, "device_cache": False, "device": "cpu", **kwargs}
    module = RestorationDataModule(root, **settings)
    module.setup("fit")
    return module


def to_u8(batch: torch.Tensor) -> np.ndarray:
    """float NCHW in [0, 1] → uint8 NHWC (exact for unjittered batches: v * (1/255) * 255 rounds back to v)."""
    return np.rint(batch.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# Written independently of `dihedral`: the 8 symmetries of the square as numpy users spell them.
NUMPY_DIHEDRAL = [
    lambda a: a,
    lambda a: np.rot90(a, 1),
    lambda a: np.rot90(a, 2),
    lambda a: np.rot90(a, 3),
    lambda a: np.fliplr(a),
    lambda a: a.transpose(1, 0, *range(2, a.ndim)),
    lambda a: np.flipud(a),
    lambda a: np.rot90(a, 2).transpose(1, 0, *range(2, a.ndim)),
]


# --------------------------------------------------------------------------------------------- the plan


def plan(seed=0, epoch=0, batch_index=0, **kwargs):
    settings = {"batch_size": 16, "num_patches": 20, "patch_size": SIZE, "crop": 8, **kwargs}
    return plan_batch(seed, epoch, batch_index, **settings)


def test_plan_is_a_pure_function_of_seed_epoch_and_batch_index():
    a, b = plan(3, 1, 7), plan(3, 1, 7)
    for field in ("patches", "offsets", "transforms", "gains", "shifts"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    for other in (plan(4, 1, 7), plan(3, 2, 7), plan(3, 1, 8)):
        assert not np.array_equal(a.patches, other.patches) or not np.array_equal(a.offsets, other.offsets)


def test_switching_augmentations_off_keeps_patches_and_crops():
    full = plan(color_jitter=0.1, brightness=0.05)
    plain = plan(dihedral=False)
    assert np.array_equal(full.patches, plain.patches) and np.array_equal(full.offsets, plain.offsets)
    assert (plain.transforms == 0).all() and (plain.gains == 1).all() and (plain.shifts == 0).all()


def test_plan_covers_every_crop_offset_and_transform_and_stays_inside():
    plans = [plan(epoch=e, batch_index=b) for e in range(4) for b in range(16)]
    offsets = np.concatenate([p.offsets for p in plans])
    assert offsets.min() == 0 and offsets.max() == SIZE - 8  # the whole valid range [0, size - crop]
    assert set(offsets[:, 0]) == set(offsets[:, 1]) == set(range(SIZE - 8 + 1))
    assert set(np.concatenate([p.transforms for p in plans])) == set(range(TRANSFORMS))
    patches = np.concatenate([p.patches for p in plans])
    assert patches.min() >= 0 and patches.max() < 20 and len(set(patches)) == 20


def test_plan_with_crop_equal_to_patch_size_has_only_zero_offsets():
    assert (plan(crop=SIZE).offsets == 0).all()


def test_colour_jitter_factors_are_mild():
    p = plan(batch_size=256, color_jitter=0.1, brightness=0.05)
    assert p.gains.shape == (256, 3) and ((p.gains >= 0.9) & (p.gains <= 1.1)).all()
    assert ((p.shifts >= -0.05) & (p.shifts <= 0.05)).all()
    assert p.gains.std() > 0.03  # drawn, not constant


# --------------------------------------------------------------------------------------------- transforms


def test_dihedral_transforms_match_numpy_and_are_all_distinct():
    patch = np.arange(5 * 5 * 3, dtype=np.int64).reshape(5, 5, 3)  # no symmetry at all
    results = [dihedral(patch, t) for t in range(TRANSFORMS)]
    for t, expected in enumerate(NUMPY_DIHEDRAL):
        assert np.array_equal(results[t], expected(patch)), t
    assert len({r.tobytes() for r in map(np.ascontiguousarray, results)}) == TRANSFORMS


@pytest.mark.parametrize("device_cache", [False, True], ids=["cpu-loader", "device-resident"])
def test_batches_hold_exactly_the_planned_crop_and_transform(tmp_path: Path, device_cache: bool):
    """Every sample equals numpy's crop + flip/rotation of the planned patch; all 8 transforms occur."""
    inputs = random_patches(3)
    module = datamodule(write_cache(tmp_path / "c", {"train": (inputs, 255 - inputs)}), crop=7, batch_size=8,
                        steps_per_epoch=6, device_cache=device_cache)
    seen = set()
    for index, (x, y) in enumerate(batches(module)):
        p = module.sampling.plan(0, index)
        for b, (patch, (oy, ox), t) in enumerate(zip(p.patches, p.offsets, p.transforms)):
            expected = NUMPY_DIHEDRAL[t](inputs[patch, oy : oy + 7, ox : ox + 7])
            assert np.array_equal(to_u8(x)[b], expected)
            assert np.array_equal(to_u8(y)[b], 255 - expected)
            seen.add(int(t))
    assert seen == set(range(TRANSFORMS))


# --------------------------------------------------------------------------------------------- batches


@pytest.mark.parametrize("device_cache", [False, True], ids=["cpu-loader", "device-resident"])
def test_input_and_target_get_identical_augmentation(tmp_path: Path, device_cache: bool):
    """target == input in the cache, so after crops, transforms and jitter every batch must still agree."""
    inputs = random_patches(10)
    module = datamodule(write_cache(tmp_path / "c", {"train": (inputs, inputs.copy())}), color_jitter=0.2,
                        brightness=0.1, steps_per_epoch=5, device_cache=device_cache)
    for x, y in batches(module, epochs=(0, 1)):
        assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32 and x.is_contiguous()
        assert torch.equal(x, y)
        assert 0 <= x.min() and x.max() <= 1


def test_target_keeps_its_relation_to_the_input(cache: Path):
    """target = 255 - input in the cache: after crops and transforms, target == 1 - input (in uint8 steps)."""
    for x, y in batches(datamodule(cache, steps_per_epoch=5)):
        assert np.array_equal(to_u8(y), 255 - to_u8(x))


def test_colour_jitter_is_a_mild_gain_per_channel_shared_by_input_and_target(tmp_path: Path):
    inputs = random_patches(10)
    root = write_cache(tmp_path / "c", {"train": (inputs, inputs.copy())})
    clean = batches(datamodule(root, steps_per_epoch=4))
    module = datamodule(root, steps_per_epoch=4, color_jitter=0.1, brightness=0.02)
    jittered = batches(module)
    for index, ((x0, _), (x, y)) in enumerate(zip(clean, jittered)):
        assert torch.equal(x, y)
        p = module.sampling.plan(0, index)  # the plan's own numbers, sample by sample
        expected = (x0 * torch.from_numpy(p.gains)[:, :, None, None] + torch.from_numpy(p.shifts)[:, None, None, None])
        torch.testing.assert_close(x, expected.clamp(0, 1), rtol=0, atol=1e-6)
    for (x0, _), (x, _) in zip(clean, batches(datamodule(root, steps_per_epoch=4, color_jitter=0.1))):
        for b in range(len(x)):
            for c in range(3):
                usable = (x0[b, c] > 0.05) & (x[b, c] < 1)  # neither clamped at white nor lost in rounding
                ratio = x[b, c][usable] / x0[b, c][usable]
                assert (ratio - 1).abs().max() <= 0.1 + 1e-5  # mild: a gain within [0.9, 1.1]
                assert ratio.max() - ratio.min() < 1e-5  # one gain per sample and channel, for every pixel
    assert not torch.equal(clean[0][0], jittered[0][0])


def test_cpu_loader_is_independent_of_worker_count_and_epochs_advance(cache: Path):
    kwargs = {"steps_per_epoch": 5, "color_jitter": 0.1}
    in_process = batches(datamodule(cache, num_workers=0, **kwargs), epochs=(0, 1, 2))
    two_workers = batches(datamodule(cache, num_workers=2, **kwargs), epochs=(0, 1, 2))
    assert_same_batches(in_process, two_workers)
    first, second = in_process[0][0], in_process[5][0]  # batch 0 of epochs 0 and 1
    assert not torch.equal(first, second)


def test_device_resident_path_matches_cpu_loader_exactly(cache: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("imrestore.data.datamodule.UPLOAD_CHUNK_BYTES", 3 * SIZE * SIZE * 3)  # upload in 7 slices
    kwargs = {"steps_per_epoch": 6, "color_jitter": 0.1, "brightness": 0.05, "seed": 7}
    cpu = batches(datamodule(cache, **kwargs), epochs=(0, 3))
    resident_module = datamodule(cache, device_cache=True, **kwargs)
    assert isinstance(resident_module.train_dataloader(), DeviceResidentBatches)
    assert_same_batches(cpu, batches(resident_module, epochs=(0, 3)))
    assert_same_batches(cpu, batches(datamodule(cache, num_workers=2, **kwargs), epochs=(0, 3)))


def test_seed_changes_the_batches(cache: Path):
    a, b = batches(datamodule(cache, seed=0)), batches(datamodule(cache, seed=1))
    assert not torch.equal(a[0][0], b[0][0])


def test_steps_per_epoch(cache: Path):
    assert len(datamodule(cache).train_dataloader()) == 20 // 4
    assert len(datamodule(cache, steps_per_epoch=3).train_dataloader()) == 3
    assert len(datamodule(cache, batch_size=64).train_dataloader()) == 1  # at least one batch
    assert len(datamodule(cache, steps_per_epoch=3, device_cache=True).train_dataloader()) == 3


def test_auto_device_cache_stays_off_on_cpu_and_needs_room_on_cuda(cache: Path):
    assert isinstance(datamodule(cache, device_cache="auto").train_dataloader(), torch.utils.data.DataLoader)
    gib = 2**30
    assert fits_on_device(10 * gib, free=60 * gib, total=80 * gib)
    assert not fits_on_device(45 * gib, free=60 * gib, total=80 * gib)  # 20 GiB stay free for training
    assert not fits_on_device(1 * gib, free=2 * gib, total=4 * gib)  # at least 2 GiB stay free


def test_cpu_dataset_pickles_without_its_arrays(cache: Path):
    """Workers started with "spawn" receive the Dataset pickled: it must not carry the memmaps with it."""
    dataset = CropBatches(cache, "train", Sampling(0, 4, 20, SIZE, 8))
    dataset[(0, 0)]  # opens the memmaps
    clone = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset)) < 2000
    assert all(torch.equal(a, b) for a, b in zip(dataset[(0, 1)], clone[(0, 1)]))


def test_sampler_fixes_the_epoch_for_a_whole_pass():
    sampler = PlanSampler(3)
    sampler.set_epoch(4)
    assert list(sampler) == [(4, 0), (4, 1), (4, 2)]


# --------------------------------------------------------------------------------------------- validation


def test_validation_uses_fixed_centre_crops_of_the_val_subset(cache: Path):
    val = np.load(cache / "val_input.npy")
    module = datamodule(cache, batch_size=2, val_crop=6)
    got = [to_u8(x) for x, _ in module.val_dataloader()]
    assert [len(g) for g in got] == [2, 2, 1]
    assert np.array_equal(np.concatenate(got), val[:, 3:9, 3:9])
    again = [to_u8(x) for x, _ in module.val_dataloader()]
    assert all(np.array_equal(a, b) for a, b in zip(got, again))


def test_validation_uses_whole_patches_by_default(cache: Path):
    (x, y), = list(datamodule(cache, batch_size=8).val_dataloader())
    assert x.shape == (5, 3, SIZE, SIZE)
    assert np.array_equal(to_u8(y), 255 - np.load(cache / "val_input.npy"))


def test_no_validation_without_a_val_subset(tmp_path: Path):
    inputs = random_patches(4)
    root = write_cache(tmp_path / "c", {"train": (inputs, inputs)})
    assert datamodule(root).val_dataloader() == []
    assert datamodule(root, val_subset=None).val_dataloader() == []


# --------------------------------------------------------------------------------------------- errors


def test_crop_larger_than_the_patch_size_is_refused(cache: Path):
    with pytest.raises(ImrestoreError, match=rf"crop .*{cache}.*expected at most its patch size {SIZE}, found 13"):
        datamodule(cache, crop=13)


def test_val_crop_larger_than_the_patch_size_is_refused(cache: Path):
    with pytest.raises(ImrestoreError, match=rf"val_crop .*expected at most its patch size {SIZE}, found 20"):
        datamodule(cache, val_crop=20)


def test_an_explicitly_named_validation_subset_must_exist(cache: Path):
    with pytest.raises(ImrestoreError, match="no subset 'holdout'"):
        datamodule(cache, val_subset="holdout")


@pytest.mark.parametrize("kwargs, message", [
    ({"crop": 0}, "crop: expected a positive integer, found 0"),
    ({"batch_size": 0}, "batch_size: expected a positive integer"),
    ({"device_cache": "yes"}, "device_cache: expected"),
    ({"color_jitter": 1.5}, r"color_jitter: expected a gain spread in \[0, 1\), found 1.5"),
    ({"seed": -1}, "seed: expected an integer >= 0, found -1"),
])
def test_bad_settings_are_refused(cache: Path, kwargs: dict, message: str):
    with pytest.raises(ImrestoreError, match=message):
        RestorationDataModule(cache, **{"crop": 8, "batch_size": 4, **kwargs})


def test_missing_cache_names_the_folder(tmp_path: Path):
    with pytest.raises(ImrestoreError, match=f"no patch cache at {tmp_path / 'nope'}"):
        datamodule(tmp_path / "nope")


# --------------------------------------------------------------------------------------------- a real Trainer


class TinyRestorer(L.LightningModule):
    """One conv: enough for the Trainer to run real optimisation steps on the datamodule's batches."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.train_batches: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self.val_shapes: list[torch.Size] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.train_batches.append((self.current_epoch, x.detach().clone(), y.detach().clone()))
        return nn.functional.mse_loss(self.conv(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_shapes.append(x.shape)
        self.log("val_mse", nn.functional.mse_loss(self.conv(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(module: RestorationDataModule, **trainer_kwargs) -> TinyRestorer:
    model = TinyRestorer()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, **trainer_kwargs)
    trainer.fit(model, datamodule=module)
    return model


@pytest.mark.parametrize("settings", [{"num_workers": 2}, {"num_workers": 0, "device_cache": True}],
                         ids=["cpu-loader-2-workers", "device-resident"])
def test_real_trainer_fit_sees_batches_of_the_right_shape(cache: Path, settings: dict):
    module = RestorationDataModule(cache, crop=8, batch_size=4, device="cpu", val_crop=8, **settings)
    model = fit(module, max_steps=2, num_sanity_val_steps=0)
    assert module.device_arrays is None  # teardown handed the device copy back
    assert len(model.train_batches) == 2
    assert all(x.shape == y.shape == (4, 3, 8, 8) for _, x, y in model.train_batches)
    assert all(np.array_equal(to_u8(y), 255 - to_u8(x)) for _, x, y in model.train_batches)


def test_trainer_advances_the_epoch_of_the_plan(cache: Path):
    """Lightning calls set_epoch on the loader's sampler: epoch e's batches are the plan's for epoch e."""
    module = RestorationDataModule(cache, crop=8, batch_size=4, steps_per_epoch=2, num_workers=2, device="cpu",
                                   color_jitter=0.1)
    model = fit(module, max_epochs=2, num_sanity_val_steps=0)
    assert [epoch for epoch, _, _ in model.train_batches] == [0, 0, 1, 1]
    expected = batches(datamodule(cache, steps_per_epoch=2, color_jitter=0.1), epochs=(0, 1))
    assert_same_batches([(x, y) for _, x, y in model.train_batches], expected)
    assert model.val_shapes == [(4, 3, SIZE, SIZE), (1, 3, SIZE, SIZE)] * 2  # 5 whole val patches, each epoch


def test_ranks_draw_different_batches_and_rank_zero_draws_the_single_process_ones():
    single = plan(seed=3, epoch=1, batch_index=2)
    assert np.array_equal(plan(seed=3, epoch=1, batch_index=2, rank=0).patches, single.patches)
    other = plan(seed=3, epoch=1, batch_index=2, rank=1)
    assert not (np.array_equal(other.patches, single.patches) and np.array_equal(other.offsets, single.offsets))
