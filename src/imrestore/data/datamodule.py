"""Training and validation batches from a patch cache, as a LightningDataModule.

One sampling plan, two executors. `plan_batch` is a pure function of (seed, epoch, batch index): it draws a
whole batch's patch indices, crop corners, dihedral transforms and colour-jitter factors from
`numpy.random.default_rng([seed, epoch, batch_index])`. Either executor turns a plan into tensors:
- `CropBatches`, a map-style Dataset whose item is a whole batch: it slices crops from the memory-mapped cache
  with numpy, in DataLoader workers. No randomness lives in the workers, so batches do not depend on the number
  of workers or on which worker ran which batch, and there is nothing to seed per worker.
- `DeviceResidentBatches`: the train cache is uploaded (uint8) to the device once, and each step gathers the
  crops there with one index computation and one gather, transforms included, no Python loop over samples.
Both feed uint8 NHWC crops to the same `to_unit_float`, so for a given seed they give identical batches.

The Trainer owns devices: the device-resident copy goes to the Trainer's root device, and `device_cache="auto"`
uses it only when that is a CUDA device with room to spare. `PlanSampler` yields (epoch, batch index) in the main
process, and Lightning calls its `set_epoch` before every epoch (also after resuming from a checkpoint). That is
how the epoch reaches persistent workers, whose copies of the Dataset would never see an attribute change.

Under DDP, Lightning shards the CPU path's `PlanSampler` across ranks (each rank runs a share of the batch
indices), while the device-resident path runs every index on every rank with the rank folded into the plan, so
no two ranks train on the same batch either way. Neither has run on several GPUs yet.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from imrestore.data.patches import PatchCache, read_meta
from imrestore.errors import ImrestoreError
from imrestore.progress import progress_bar

TRANSFORMS = 8  # the symmetries of the square: 4 rotations, each with or without a mirror
DEFAULT_VAL_SUBSET = "val"
# Multiplying by the float32 reciprocal of 255 is one correctly rounded multiply on every backend (where a
# division by a scalar may be rewritten as such a multiply on some), so the executors agree bit for bit on any
# device; 255 * float32(1/255) rounds to exactly 1.0.
INV_255 = 1.0 / 255.0
# "auto" leaves this share of the device's memory (at least MIN_RESERVE_BYTES) to the model, activations and
# optimiser state; the cache only goes on the device if it fits in what is free beyond that.
DEVICE_MEMORY_RESERVE = 0.25
MIN_RESERVE_BYTES = 2 << 30
UPLOAD_CHUNK_BYTES = 256 << 20  # upload in slices, so host memory never holds a second copy of the cache

DeviceCache = Literal["auto"] | bool


# --------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class BatchPlan:
    """Everything random about one training batch; arrays of length batch_size."""

    patches: np.ndarray  # int64 (B,): which patch of the train subset
    offsets: np.ndarray  # int64 (B, 2): the crop's top-left corner (y, x) inside the patch
    transforms: np.ndarray  # int64 (B,): dihedral transform id, see `dihedral`
    gains: np.ndarray  # float32 (B, 3): per-channel gain, 1 without colour jitter
    shifts: np.ndarray  # float32 (B,): brightness offset, 0 without brightness jitter


def plan_batch(seed: int, epoch: int, batch_index: int, *, batch_size: int, num_patches: int, patch_size: int,
               crop: int, dihedral: bool = True, color_jitter: float = 0.0, brightness: float = 0.0,
               rank: int = 0) -> BatchPlan:
    """Draw one batch's plan from `default_rng([seed, epoch, batch_index])` (plus `rank` when it is not 0).

    `rank` separates the processes of a multi-GPU run that each draw every batch index themselves (the
    device-resident path); rank 0 draws exactly what a single process draws.

    Every value is always drawn, in a fixed order, and switched-off augmentations are then neutralised: so
    turning jitter or the dihedral transforms off leaves the patches and crops of every batch unchanged.
    Patches are drawn with replacement: an epoch is `steps_per_epoch` batches rather than one pass over the
    patches, and independent draws keep each batch computable on its own, without a shared permutation.
    """
    rng = np.random.default_rng([seed, epoch, batch_index, *([rank] if rank else [])])
    patches = rng.integers(0, num_patches, size=batch_size)
    offsets = rng.integers(0, patch_size - crop + 1, size=(batch_size, 2))
    transforms = rng.integers(0, TRANSFORMS, size=batch_size)
    gains = rng.uniform(1.0 - color_jitter, 1.0 + color_jitter, size=(batch_size, 3)).astype(np.float32)
    shifts = rng.uniform(-brightness, brightness, size=batch_size).astype(np.float32)
    if not dihedral:
        transforms[:] = 0
    return BatchPlan(patches, offsets, transforms, gains, shifts)


@dataclass(frozen=True)
class Sampling:
    """The settings `plan_batch` needs besides (epoch, batch index), shared by both executors."""

    seed: int
    batch_size: int
    num_patches: int
    patch_size: int
    crop: int
    dihedral: bool = True
    color_jitter: float = 0.0
    brightness: float = 0.0
    rank: int = 0

    @property
    def jitter(self) -> bool:
        return self.color_jitter > 0 or self.brightness > 0

    def plan(self, epoch: int, batch_index: int) -> BatchPlan:
        return plan_batch(self.seed, epoch, batch_index, batch_size=self.batch_size, num_patches=self.num_patches,
                          patch_size=self.patch_size, crop=self.crop, dihedral=self.dihedral,
                          color_jitter=self.color_jitter, brightness=self.brightness, rank=self.rank)


class PlanSampler(Sampler[tuple[int, int]]):
    """Yields (epoch, batch_index) for the batches of one epoch.

    It runs in the main process, so the epoch it stamps on each index is current even for persistent workers.
    Lightning finds it as the loader's `.sampler` and calls `set_epoch` before every epoch; but the value it
    passes counts *processed* epochs, which after resuming from an end-of-epoch checkpoint lags the epoch being
    run by one, so that epoch would replay the previous one's batches. `epoch_of`, when given (the data
    module passes the trainer's `current_epoch`), is asked instead.
    """

    def __init__(self, steps: int, epoch_of: Callable[[], int] | None = None) -> None:
        self.steps = steps
        self.epoch = 0
        self.epoch_of = epoch_of

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # fixed for the whole epoch, whatever happens to the attribute meanwhile
        epoch = int(self.epoch_of()) if self.epoch_of is not None else self.epoch
        return iter([(epoch, index) for index in range(self.steps)])


# --------------------------------------------------------------------------------------------- transforms


def dihedral(image: np.ndarray, transform: int) -> np.ndarray:
    """The dihedral transform `transform` (0-7) of an (H, W, ...) array, as a view.

    Mirror left-right when transform >= 4, then rotate transform % 4 quarter turns counter-clockwise
    (`np.rot90`). 0 is the identity; 1-3 are rotations; 4 is `np.fliplr`; 6 is `np.flipud`; 5 and 7 are the
    transpose and the anti-transpose.
    """
    if transform >= 4:
        image = image[:, ::-1]
    return np.rot90(image, transform % 4, axes=(0, 1))


def dihedral_offsets(crop: int, patch_size: int) -> np.ndarray:
    """int64 (8, crop, crop): for each transform, where each output pixel reads inside a patch, as
    row * patch_size + col relative to the crop's corner.

    Built by transforming a grid of coordinates with `dihedral` itself, so the device executor's index
    arithmetic cannot drift from the CPU executor's views.
    """
    rows, cols = np.indices((crop, crop), dtype=np.int64)
    within_patch = rows * patch_size + cols
    return np.stack([np.ascontiguousarray(dihedral(within_patch, t)) for t in range(TRANSFORMS)])


def to_unit_float(pixels: torch.Tensor, gains: torch.Tensor | None = None,
                  shifts: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (B, H, W, 3) crops → contiguous float32 NCHW in [0, 1], with the plan's jitter when given.

    Jitter is a gain per channel and then a brightness offset, the same numbers for input and target, so the
    pair stays consistent. Clamped, because a gain above 1 would push highlights past white.
    """
    batch, height, width, channels = pixels.shape
    unit = empty_batch((batch, channels, height, width), pixels.device)
    unit.copy_(pixels.permute(0, 3, 1, 2)).mul_(INV_255)  # copy_ converts uint8 to float exactly
    if gains is None:
        return unit
    unit.mul_(gains[:, :, None, None]).add_(shifts[:, None, None, None])
    return unit.clamp_(0.0, 1.0)


def empty_batch(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """An uninitialised float32 batch tensor; inside a DataLoader worker, in shared memory from the start.

    A worker's batch reaches the main process through shared memory. Allocated there directly (as
    `default_collate` does), it crosses without the copy torch would otherwise make while sending it, which
    measurably raised crops/s at 256^2 (benchmarks/loader_throughput.py).
    """
    unit = torch.empty(shape, dtype=torch.float32, device=device)
    if unit.device.type == "cpu" and get_worker_info() is not None:
        unit.share_memory_()
    return unit


# --------------------------------------------------------------------------------------------- CPU executor


class CacheDataset(Dataset):
    """A Dataset over one subset of a patch cache that pickles as the cache's location only and reopens the
    memmaps in each worker: a pickled memmap would be the whole array, copied into every worker started with
    "spawn"."""

    def __init__(self, root: Path, subset: str) -> None:
        self.root, self.subset = Path(root), subset
        self._cache: PatchCache | None = None

    @property
    def cache(self) -> PatchCache:
        if self._cache is None:
            self._cache = PatchCache(self.root, self.subset)
        return self._cache

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": None}


class CropBatches(CacheDataset):
    """CPU executor. Item (epoch, batch_index) → one training batch (input, target), cut from the
    memory-mapped train subset."""

    def __init__(self, root: Path, subset: str, sampling: Sampling) -> None:
        super().__init__(root, subset)
        self.sampling = sampling

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, batch_index = key
        plan = self.sampling.plan(epoch, batch_index)
        gains, shifts = (None, None)
        if self.sampling.jitter:
            gains, shifts = torch.from_numpy(plan.gains), torch.from_numpy(plan.shifts)
        return tuple(to_unit_float(torch.from_numpy(self.gather(array, plan)), gains, shifts)
                     for array in (self.cache.inputs, self.cache.targets))

    def gather(self, array: np.ndarray, plan: BatchPlan) -> np.ndarray:
        """uint8 (B, crop, crop, 3): the plan's crops of `array`, transformed.

        A loop over samples is right here: each slice of the memmap reads only the crop's rows, where fancy
        indexing would read whole patches.
        """
        crop = self.sampling.crop
        out = np.empty((len(plan.patches), crop, crop, 3), dtype=np.uint8)
        for b, (patch, (y, x), transform) in enumerate(zip(plan.patches, plan.offsets, plan.transforms)):
            out[b] = dihedral(array[patch, y : y + crop, x : x + crop], transform)
        return out


# --------------------------------------------------------------------------------------------- device executor


def upload(array: np.ndarray, device: torch.device, label: str = "upload") -> torch.Tensor:
    """Copy a (memory-mapped) uint8 array to `device`, a slice at a time, with a progress bar (a cache read
    from disk can take a while)."""
    out = torch.empty(array.shape, dtype=torch.uint8, device=device)
    rows = max(1, UPLOAD_CHUNK_BYTES // max(1, array[0].nbytes))
    with progress_bar(label, total=array.nbytes, unit="bytes") as advance:
        for start in range(0, len(array), rows):
            # np.array: a writable host copy of just this slice (torch does not take read-only memmaps)
            chunk = np.array(array[start : start + rows])
            out[start : start + rows].copy_(torch.from_numpy(chunk))
            advance(chunk.nbytes)
    return out


def fits_on_device(nbytes: int, free: int, total: int) -> bool:
    """Whether a cache of `nbytes` leaves the reserve free for training."""
    return nbytes + max(MIN_RESERVE_BYTES, DEVICE_MEMORY_RESERVE * total) <= free


class DeviceResidentBatches:
    """Device executor: an iterable of training batches gathered on the device from an uploaded cache.

    It has a `.sampler` like a DataLoader, so Lightning's per-epoch `set_epoch` reaches it the same way.
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, sampling: Sampling, sampler: PlanSampler) -> None:
        self.sampling, self.sampler = sampling, sampler
        self.device = inputs.device
        # (N * S * S, 3): one row per pixel, so a crop is a set of row numbers and one gather fetches a batch
        self.inputs, self.targets = inputs.view(-1, 3), targets.view(-1, 3)
        self.offsets = torch.from_numpy(dihedral_offsets(sampling.crop, sampling.patch_size)).to(self.device)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for epoch, batch_index in self.sampler:
            yield self.batch(epoch, batch_index)

    def batch(self, epoch: int, batch_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        plan = self.sampling.plan(epoch, batch_index)
        pixels = self.pixel_rows(plan)
        gains, shifts = self.jitter(plan)
        return tuple(to_unit_float(self.gather(array, pixels), gains, shifts) for array in (self.inputs, self.targets))

    @staticmethod
    def gather(array: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, crop, crop, 3): rows `pixels` of a flattened cache. index_select on one flat index, rather
        than advanced indexing with a 3-D one: the same result, about twice as fast on the CPU."""
        return array.index_select(0, pixels.view(-1)).view(*pixels.shape, 3)

    def pixel_rows(self, plan: BatchPlan) -> torch.Tensor:
        """int64 (B, crop, crop): the row of the flattened cache each output pixel reads.

        Crop corner (patch, y, x) plus the transform's offset grid: cropping and the dihedral transform become
        one index computation, and the gather that follows serves input and target alike.
        """
        size = self.sampling.patch_size
        corners = (plan.patches * size + plan.offsets[:, 0]) * size + plan.offsets[:, 1]
        corners, transforms = self.to_device(np.stack([corners, plan.transforms]))
        return corners.view(-1, 1, 1) + self.offsets.index_select(0, transforms)

    def jitter(self, plan: BatchPlan) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        if not self.sampling.jitter:
            return None, None
        factors = self.to_device(np.concatenate([plan.gains, plan.shifts[:, None]], axis=1))
        return factors[:, :3], factors[:, 3]

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        """A plan's numbers on the device. To CUDA from pinned memory without blocking: a copy from pageable
        memory would wait for the GPU to finish the previous training step, every step."""
        tensor = torch.from_numpy(array)
        if self.device.type != "cuda":
            return tensor.to(self.device)
        return tensor.pin_memory().to(self.device, non_blocking=True)


# --------------------------------------------------------------------------------------------- validation


class ValidationBatches(CacheDataset):
    """Item b → the b-th batch of the subset, in order, centre-cropped to `crop` (whole patches when
    crop is the patch size): fixed inputs, so validation metrics compare across epochs and runs."""

    def __init__(self, root: Path, subset: str, batch_size: int, crop: int, patch_size: int, count: int) -> None:
        super().__init__(root, subset)
        self.batch_size, self.crop = batch_size, crop
        self.corner = (patch_size - crop) // 2
        self.count = count

    def __len__(self) -> int:
        return math.ceil(self.count / self.batch_size)

    def __getitem__(self, batch_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = slice(batch_index * self.batch_size, (batch_index + 1) * self.batch_size)
        window = slice(self.corner, self.corner + self.crop)
        return tuple(to_unit_float(torch.from_numpy(np.array(array[rows, window, window])))
                     for array in (self.cache.inputs, self.cache.targets))


# --------------------------------------------------------------------------------------------- the DataModule


def _check(condition: bool, what: str, expected: str, found: object) -> None:
    if not condition:
        raise ImrestoreError(f"{what}: expected {expected}, found {found!r}")


class RestorationDataModule(L.LightningDataModule):
    """Random crops of a patch cache's train subset, fixed crops of its val subset, float32 NCHW in [0, 1].

    Args:
        cache_dir: a patch cache folder (`imrestore.data.patches`), e.g. build/patches/gopro.
        crop: side of the training crops, at most the cache's patch size.
        batch_size: crops per batch (training and validation).
        steps_per_epoch: batches per training epoch; default: train patches // batch_size, at least 1.
        num_workers: DataLoader worker processes for the CPU executor (0: in the main process).
        device_cache: True: train from a copy of the cache on the device (`device`, or the Trainer's); False:
            never; "auto": only on a CUDA device with room for it (see `fits_on_device`).
        dihedral: apply one of the 8 flips/rotations per crop, the same to input and target.
        color_jitter: j: per-channel gain drawn in [1 - j, 1 + j] per crop, the same for input and target.
        brightness: b: brightness offset drawn in [-b, b] per crop, after the gain.
        seed: the sampling seed; batches are a function of (seed, epoch, batch index) only.
        val_subset: the cache subset to validate on; None: no validation. The default "val" is optional
            (a cache without it gets no validation); another name must exist.
        val_crop: side of the centre crop of validation patches; default: whole patches.
        device: where the device-resident cache lives; default: the Trainer's root device (without a Trainer,
            CUDA when available).
    """

    def __init__(self, cache_dir: Path | str, *, crop: int, batch_size: int, steps_per_epoch: int | None = None,
                 num_workers: int = 2, device_cache: DeviceCache = "auto", dihedral: bool = True,
                 color_jitter: float = 0.0, brightness: float = 0.0, seed: int = 0,
                 val_subset: str | None = DEFAULT_VAL_SUBSET, val_crop: int | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        _check(isinstance(crop, int) and crop >= 1, "crop", "a positive integer", crop)
        _check(isinstance(batch_size, int) and batch_size >= 1, "batch_size", "a positive integer", batch_size)
        _check(steps_per_epoch is None or (isinstance(steps_per_epoch, int) and steps_per_epoch >= 1),
               "steps_per_epoch", "a positive integer or None", steps_per_epoch)
        _check(isinstance(num_workers, int) and num_workers >= 0, "num_workers", "an integer >= 0", num_workers)
        _check(device_cache in ("auto", True, False), "device_cache", '"auto", True or False', device_cache)
        _check(0 <= color_jitter < 1, "color_jitter", "a gain spread in [0, 1)", color_jitter)
        _check(0 <= brightness < 1, "brightness", "a brightness spread in [0, 1)", brightness)
        _check(isinstance(seed, int) and seed >= 0, "seed", "an integer >= 0", seed)
        _check(val_crop is None or (isinstance(val_crop, int) and val_crop >= 1), "val_crop",
               "a positive integer or None", val_crop)
        cache_dir = str(cache_dir)  # checkpoints load with weights_only=True, which refuses Path objects
        self.save_hyperparameters()  # into checkpoints, so a run records how its batches were made
        self.cache_dir = Path(cache_dir)
        self.crop, self.batch_size, self.steps_per_epoch = crop, batch_size, steps_per_epoch
        self.num_workers, self.device_cache, self.seed = num_workers, device_cache, seed
        self.dihedral, self.color_jitter, self.brightness = dihedral, color_jitter, brightness
        self.val_subset, self.val_crop = val_subset, val_crop
        self.requested_device = torch.device(device) if device is not None else None
        self.sampling: Sampling | None = None
        self.steps = 0
        self.device_arrays: tuple[torch.Tensor, torch.Tensor] | None = None
        self.validation: ValidationBatches | None = None

    # ----------------------------------------------------------------------------------------- setup

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and self.sampling is None:
            self._setup_training()
        if stage in ("fit", "validate", None) and self.validation is None:
            self.validation = self._open_validation()

    def _setup_training(self) -> None:
        train = PatchCache(self.cache_dir, "train")
        where = f"patch cache {self.cache_dir}"
        _check(self.crop <= train.patch_size, f"crop for {where}", f"at most its patch size {train.patch_size}",
               self.crop)
        _check(len(train) > 0, f"train subset of {where}", "at least one patch", len(train))
        self.sampling = Sampling(self.seed, self.batch_size, len(train), train.patch_size, self.crop,
                                 self.dihedral, self.color_jitter, self.brightness)
        self.steps = self.steps_per_epoch or max(1, len(train) // self.batch_size)
        device = self.cache_device()
        if self.wants_device_cache(device, train.inputs.nbytes + train.targets.nbytes):
            rank_zero_info(f"imrestore: training crops from a copy of {where} on {device} "
                           f"({(train.inputs.nbytes + train.targets.nbytes) / 2**30:.2f} GiB)")
            self.device_arrays = (upload(train.inputs, device, f"train inputs → {device}"),
                                  upload(train.targets, device, f"train targets → {device}"))

    def cache_device(self) -> torch.device:
        """The device-resident cache's device: as requested, else the Trainer's, else CUDA if available."""
        if self.requested_device is not None:
            return self.requested_device
        if self.trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def wants_device_cache(self, device: torch.device, nbytes: int) -> bool:
        if self.device_cache != "auto":
            return bool(self.device_cache)
        if device.type != "cuda":
            return False  # on the CPU the memmap already is the fast path, and it costs no RAM of its own
        free, total = torch.cuda.mem_get_info(device)
        return fits_on_device(nbytes, free, total)

    def _open_validation(self) -> ValidationBatches | None:
        if self.val_subset is None:
            return None
        if self.val_subset == DEFAULT_VAL_SUBSET and self.val_subset not in read_meta(self.cache_dir)["subsets"]:
            return None  # a cache without a val subset simply gets no validation
        val = PatchCache(self.cache_dir, self.val_subset)
        crop = self.val_crop or val.patch_size
        _check(crop <= val.patch_size, f"val_crop for patch cache {self.cache_dir}",
               f"at most its patch size {val.patch_size}", crop)
        return ValidationBatches(self.cache_dir, self.val_subset, self.batch_size, crop, val.patch_size, len(val))

    def teardown(self, stage: str | None = None) -> None:
        if stage in ("fit", None):
            # Hand the device memory back once training is done; a later fit sets up (and uploads) again.
            self.device_arrays, self.sampling = None, None

    # ----------------------------------------------------------------------------------------- loaders

    def train_dataloader(self) -> DataLoader | DeviceResidentBatches:
        if self.sampling is None:
            self.setup("fit")
        trainer = self.trainer
        sampler = PlanSampler(self.steps, (lambda: trainer.current_epoch) if trainer is not None else None)
        if self.device_arrays is not None:
            # Lightning shards a DataLoader's sampler across DDP ranks, but not this iterable: every rank walks
            # all batch indices, so each draws its own batches through its rank.
            rank = trainer.global_rank if trainer is not None else 0
            sampling = dataclasses.replace(self.sampling, rank=rank)
            return DeviceResidentBatches(*self.device_arrays, sampling, sampler)
        batches = CropBatches(self.cache_dir, "train", self.sampling)
        return self._loader(batches, sampler)

    def val_dataloader(self) -> DataLoader | list:
        if self.validation is None:
            self.setup("validate")
        if self.validation is None:
            return []  # Lightning runs no validation loop for an empty list
        return self._loader(self.validation, sampler=None)

    def _loader(self, dataset: Dataset, sampler: Sampler | None) -> DataLoader:
        # batch_size=None: each item already is a whole batch. Pinned host memory makes the copy to a CUDA
        # device asynchronous; persistent workers keep their open memmaps and page cache from epoch to epoch.
        return DataLoader(dataset, batch_size=None, sampler=sampler, shuffle=False, num_workers=self.num_workers,
                          pin_memory=self.cache_device().type == "cuda",
                          persistent_workers=self.num_workers > 0)
