"""The LightningModule: the network, its loss and its optimisation. Devices, precision and distribution are the
Trainer's (see `build_trainer`); batches are the data module's.

- Losses: `mse` (the paper), `l1`, `charbonnier` (a smooth L1) and `psnr` (NAFNet's log-MSE, which weighs every
  image's error by its own scale).
- Optimisers: AdamW with linear warmup and cosine decay (the default), or Adam + StepLR (the paper's).
- A loss that becomes NaN or infinite stops the run with a message; the last good checkpoint stays on disk,
  because checkpoints are written only after steps that finished.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from imrestore import atomic
from imrestore.data.layouts import TASKS
from imrestore.errors import ImrestoreError
from imrestore.models.dcn import DeformableConv2d
from imrestore.models.network import ModelConfig, build_network
from imrestore.params import (BOOLEAN, SEED, TEXT, Section, choice, either, given, integer, invalid, nested, number,
                              optional, param, reject_unknown)

if TYPE_CHECKING:  # imported where used: the patch cache's module is train()'s, not the LightningModule's
    from imrestore.data.patches import PatchGeometry

LOSSES = ("mse", "l1", "charbonnier", "psnr")
OPTIMIZERS = ("adamw", "adam")
SCHEDULERS = ("cosine", "step", "constant")
CHARBONNIER_EPS = 1e-3
PSNR_LOSS_SCALE = 10 / math.log(10)


@dataclass(frozen=True)
class OptimConfig(Section):
    """How the network learns: the `train.optim` section of params.yaml."""

    SECTION = "train.optim"

    loss: str = param("psnr", choice(*LOSSES))
    optimizer: str = param("adamw", choice(*OPTIMIZERS))
    lr: float = param(2e-3, number(above=0))
    weight_decay: float = param(1e-4, number(minimum=0))
    scheduler: str = param("cosine", choice(*SCHEDULERS))
    warmup_steps: int = param(0, integer(minimum=0))
    step_size: int = param(1000, integer(minimum=1))  # StepLR: the paper's 1000 (GoPro) / 500 (SIDD) steps
    gamma: float = param(0.5, number(above=0))
    max_steps: int = given(100)  # the run's length (train.max_steps), which the cosine schedule spans
    min_lr_ratio: float = param(0.01, number(minimum=0, maximum=1))  # cosine decays to lr · min_lr_ratio
    # lr of the deformable convolutions' offset/mask predictors, as a fraction of lr (0 freezes them at the
    # regular grid); BasicSR's EDVR has the same lever (dcn_lr_mul). README, "Training on the sample".
    offset_lr_scale: float = param(0.1, number(minimum=0))


def restoration_loss(name: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if name == "mse":
        return F.mse_loss(output, target)
    if name == "l1":
        return F.l1_loss(output, target)
    if name == "charbonnier":
        return torch.sqrt((output - target) ** 2 + CHARBONNIER_EPS**2).mean()
    # psnr: minimising log(MSE) per image is maximising its PSNR; the scale makes it read in dB.
    per_image = ((output - target) ** 2).flatten(1).mean(dim=1)
    return PSNR_LOSS_SCALE * torch.log(per_image + 1e-8).mean()


def learning_rate_factor(step: int, config: OptimConfig) -> float:
    """Multiplier of the base lr at `step`: linear warmup, then cosine / step / constant."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.scheduler == "step":
        return config.gamma ** (step // config.step_size)
    if config.scheduler == "constant":
        return 1.0
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class NonFiniteLossError(ImrestoreError):
    """The loss or a validation output became NaN or infinite: training stops, the last good checkpoint is kept."""


class RestorationModule(L.LightningModule):
    """The restoration network (`model.arch`: the paper's or NAFNet), trained on (degraded, clean) batches in [0, 1]."""

    def __init__(self, model: dict[str, Any], optim: dict[str, Any], channels_last: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()  # plain dicts: a checkpoint rebuilds the module from them
        self.model_config = ModelConfig.from_params(model)
        self.optim_config = OptimConfig(**optim)
        self.channels_last = channels_last
        self.net = build_network(self.model_config)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
        degraded, clean = batch
        loss = restoration_loss(self.optim_config.loss, self(degraded), clean)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the {self.optim_config.loss} loss became {loss.item()} at step {self.global_step}; training stopped. "
                "The last good checkpoint is kept; lower train.optim.lr or enable gradient clipping "
                "(train.gradient_clip) and run again to resume from it"
            )
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> None:
        degraded, clean = batch
        restored = self(degraded)
        bad = int((~torch.isfinite(restored)).sum())
        if bad:  # a NaN PSNR in the curves would hide it until evaluate; stop here, where the cause is fresh
            raise NonFiniteLossError(
                f"validation at step {self.global_step}: {bad} of {restored.numel()} output values are NaN or "
                f"infinite in eval mode (validation batch {batch_index}). The last good checkpoint is kept; "
                "model.norm: layer keeps eval mode stable (README, \"Why LayerNorm\")"
            )
        restored = restored.clamp(0, 1)
        size = degraded.shape[0]
        self.log("val/psnr", peak_signal_noise_ratio(restored, clean, data_range=1.0), batch_size=size, prog_bar=True)
        if min(clean.shape[-2:]) >= 11:  # SSIM's 11×11 Gaussian window needs that much image
            ssim = structural_similarity_index_measure(restored, clean, data_range=1.0, gaussian_kernel=True,
                                                       sigma=1.5, kernel_size=11)
            self.log("val/ssim", ssim, batch_size=size)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimiser's groups, named so Lightning's lr monitor logs each (`lr-AdamW/<name>`).

        The offset/mask predictors start at zero (a regular grid). Adam's first steps are about lr in size
        whatever the gradient's magnitude, so at the network's lr they scatter the sampling points within tens
        of steps, before the rest of the network has learnt anything to align them to; a kernel-4 network then
        stalls for hundreds of steps (benchmarks/dcn_offset_lr.py). A smaller lr for them keeps the grid
        near-regular while the features form."""
        offsets = [p for m in self.net.modules() if isinstance(m, DeformableConv2d) for p in m.offset_mask.parameters()]
        offset_ids = {id(p) for p in offsets}
        groups = [{"name": "network", "params": [p for p in self.parameters() if id(p) not in offset_ids]}]
        if offsets:  # NAFNet has none
            offset_lr = self.optim_config.lr * self.optim_config.offset_lr_scale
            groups.append({"name": "dcn_offsets", "params": offsets, "lr": offset_lr})
        return groups

    def configure_optimizers(self) -> dict:
        config = self.optim_config
        optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        weight_decay = config.weight_decay if config.optimizer == "adamw" else 0.0
        optimizer = optimizer_class(self.parameter_groups(), lr=config.lr, weight_decay=weight_decay,
                                    betas=(0.9, 0.99))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, config))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def export_weights(module: RestorationModule, out_dir: Path, task: str | None = None) -> None:
    """The trained network as a plain state dict plus its config (and task): loadable with `weights_only=True`."""
    net = getattr(module.net, "_orig_mod", module.net)  # the module itself, not a torch.compile wrapper
    state = {key: value.detach().cpu() for key, value in net.state_dict().items()}
    with atomic.atomic_file(Path(out_dir) / "model.pt") as tmp:
        torch.save(state, tmp)
    atomic.write_json(Path(out_dir) / "config.json", {"task": task, "model": module.hparams["model"]})


# --------------------------------------------------------------------------------------------- the run

LAST_CHECKPOINT = "last.ckpt"  # the newest training state, which an interrupted run resumes from
RUN_FILE = "run.json"  # beside the checkpoints: what they were trained for, so a changed run never resumes them

AUTO_OR_BOOLEAN = choice("auto", True, False)
STEPS = integer(minimum=1)


@dataclass(frozen=True)
class TrainSettings(Section):
    """The `train` section of params.yaml for one task (`for_task`). Presets are data: conf/train/<preset>.yaml,
    composed into params.yaml (imrestore.params), so these are the values DVC records."""

    SECTION = "train"

    seed: int = param(0, SEED)
    crop: int = param(64, STEPS)  # at most the patch cache's side (patches.<dataset>.crop_size)
    batch_size: int = param(4, STEPS)
    max_steps: int = param(600, STEPS)
    steps_per_epoch: int = param(100, STEPS)  # validation and checkpoint cadence
    # centre crops of the val patches (at most the patch size); None: whole patches
    val_crop: int | None = param(64, optional(integer(minimum=1)))
    num_workers: int = param(2, integer(minimum=0))
    device_cache: str | bool = param("auto", AUTO_OR_BOOLEAN)
    dihedral: bool = param(True, BOOLEAN)
    color_jitter: float = param(0.0, number(minimum=0))
    gradient_clip: float = param(1.0, number(minimum=0))  # 0: off
    ema_decay: float = param(0.0, number(minimum=0, below=1))  # 0: off
    # auto: bf16-mixed on GPU, 32-true on CPU; else what Lightning takes ("bf16-mixed", "16-mixed", 32, …)
    precision: str | int = param("auto", either(TEXT, choice(16, 32, 64)))
    channels_last: str | bool = param("auto", AUTO_OR_BOOLEAN)  # auto: on GPU
    compile: bool = param(False, BOOLEAN)
    # auto: strict on CPU, warn on GPU (some CUDA kernels have no deterministic form)
    deterministic: str | bool = param("auto", choice("auto", "warn", True, False))
    accelerator: str = param("auto", TEXT)
    devices: str | int = param("auto", either(integer(minimum=-1), TEXT))  # as Lightning takes them
    num_nodes: int = param(1, STEPS)
    strategy: str = param("auto", TEXT)
    optim: OptimConfig = nested(OptimConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.optim.max_steps != self.max_steps:  # the schedule spans the run, whoever built the settings
            object.__setattr__(self, "optim", dataclasses.replace(self.optim, max_steps=self.max_steps))

    @classmethod
    def for_task(cls, section: Any, task: str) -> TrainSettings:
        """`train` for `task`: `train.per_task.<task>` fills the keys `train` leaves null."""
        if section is not None and not isinstance(section, dict):
            raise invalid("params.yaml: train", "a mapping", section)
        return cls.from_params(with_task_values(section or {}, task)[0])


def with_task_values(section: dict[str, Any], task: str) -> tuple[dict[str, Any], list[str]]:
    """`train` with `train.per_task.<task>` filled in (and `per_task` removed), and the per-task values set aside.

    A task's value fills a key that `train` leaves null. Where `train` sets the key too, `train`'s value wins:
    `-S train.max_steps=50` means every task, under any preset, whatever steps the preset gives each task. The
    per-task values it outvotes come back as sentences (`train.max_steps is 50, so train.per_task.denoise.max_steps
    (1000) is not used`) for the train stage to print, so none is ignored silently. Nested sections (`optim`)
    follow the same rule key by key.
    """
    section = dict(section)
    per_task = section.pop("per_task", None) or {}
    if not isinstance(per_task, dict):
        raise ImrestoreError(f"params.yaml: train.per_task must be a mapping of task names, found {per_task!r}")
    reject_unknown(per_task, set(TASKS), "train.per_task")
    own, where = per_task.get(task) or {}, f"train.per_task.{task}"
    if isinstance(own, dict):  # named here, not as `train.<key>` after the merge
        reject_unknown(own, TrainSettings.keys(), where)
        if isinstance(own.get("optim"), dict):
            reject_unknown(own["optim"], OptimConfig.keys(), f"{where}.optim")
    set_aside: list[str] = []
    return _fill_nulls(section, own, "train", where, set_aside), set_aside


def _fill_nulls(shared: dict[str, Any], own: Any, shared_at: str, own_at: str,
                set_aside: list[str]) -> dict[str, Any]:
    """`shared` with the values of `own` (e.g. `train.per_task.deblur`) in the keys it leaves null, nested
    mappings key by key; a key `shared` sets keeps its value, and `set_aside` says which of `own`'s it outvoted."""
    if not isinstance(own, dict):
        raise ImrestoreError(f"params.yaml: {own_at} must be a mapping of {shared_at} keys, found {own!r}")
    filled = dict(shared)
    for key, value in own.items():
        current = filled.get(key)
        if isinstance(current, dict):
            filled[key] = _fill_nulls(current, value, f"{shared_at}.{key}", f"{own_at}.{key}", set_aside)
        elif current is None:
            filled[key] = value
        elif value is not None and value != current:
            set_aside.append(f"{shared_at}.{key} is {current!r}, so {own_at}.{key} ({value!r}) is not used")
    return filled


def _cuda_run(settings: TrainSettings) -> bool:
    return settings.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


TRAIN_STAGE = Path(__file__).resolve().parents[2] / "stages" / "train.py"


def training_code_digest() -> str:
    """sha256 over the library code a training run executes: the import closure of the train stage, the same
    files dvc.yaml lists as its code deps (imrestore.codedeps). Outside a checkout (an installed wheel, which
    has no stages/) it is the closure of this module."""
    from imrestore.codedeps import code_digest

    return code_digest([TRAIN_STAGE if TRAIN_STAGE.is_file() else Path(__file__)])


def _dvclive_logger(live_dir: Path):
    """DVCLive's Lightning logger, with step 0 logged as step 0.

    DVCLive 3.49 tests `if step:`, so step 0 counts as "no step" and each call at step 0 advances its counter
    instead: the first training loss landed at step 1 or 2 and step 2 appeared twice in the curves.
    """
    from dvclive.lightning import DVCLiveLogger

    class StepZeroDVCLiveLogger(DVCLiveLogger):
        def log_metrics(self, metrics, step=None, sync=False):
            if step == 0:
                self.experiment.step = -1  # the parent's "no step" branch adds 1
            super().log_metrics(metrics, step, sync)

    # dvc.yaml declares the plots and metrics; DVC itself records experiments, so DVCLive does neither.
    return StepZeroDVCLiveLogger(dir=str(live_dir), save_dvc_exp=False, dvcyaml=False, resume=True)


def _step_progress_bar() -> L.Callback:
    """Lightning's rich bar, titled by epochs of this run: training is bounded by max_steps (max_epochs=-1),
    for which Lightning's own title reads `Epoch 1/-2`."""
    from lightning.pytorch.callbacks import RichProgressBar

    class StepBoundedProgressBar(RichProgressBar):
        def _get_train_description(self, current_epoch: int) -> str:
            per_epoch = self.trainer.num_training_batches
            epochs = math.ceil(self.trainer.max_steps / per_epoch) if per_epoch not in (0, math.inf) else "?"
            return f"Epoch {current_epoch + 1}/{epochs}"

    return StepBoundedProgressBar()


# The keys of ModelCheckpoint's state that hold files of its folder (best_k_models maps such files to scores).
_CHECKPOINT_PATH_KEYS = ("dirpath", "best_model_path", "kth_best_model_path", "last_model_path")


def _last_checkpoint(checkpoint_dir: Path) -> L.Callback:
    """The newest state as last.ckpt after every epoch (`steps_per_epoch` steps), which a killed run resumes from.

    Not save_last: since Lightning 2.6 it writes only alongside a top-k checkpoint, so with save_top_k=0 nothing
    was written until training had ended. str, not Path: checkpoints must load with weights_only=True, which
    refuses pathlib objects. Its saved state names files relative to the folder: Lightning's absolute paths made
    last.ckpt's bytes, which dvc.lock hashes, depend on where the repository was cloned (every fresh clone's
    `make repro` changed dvc.lock), and a resume from a moved folder warned and dropped that state.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    class PortableModelCheckpoint(ModelCheckpoint):
        def state_dict(self) -> dict[str, Any]:
            state = super().state_dict()
            relative = lambda path: os.path.relpath(path, self.dirpath) if path else path  # noqa: E731
            return {**state, **{key: relative(state[key]) for key in _CHECKPOINT_PATH_KEYS},
                    "best_k_models": {relative(path): score for path, score in state["best_k_models"].items()}}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            # Absolute paths (checkpoints written before) pass through os.path.join unchanged.
            absolute = lambda path: os.path.normpath(os.path.join(self.dirpath, path)) if path else path  # noqa: E731
            best_k = state_dict.get("best_k_models", {})
            super().load_state_dict({
                **state_dict, **{key: absolute(state_dict[key]) for key in _CHECKPOINT_PATH_KEYS if key in state_dict},
                "best_k_models": {absolute(path): score for path, score in best_k.items()}})

    return PortableModelCheckpoint(dirpath=str(checkpoint_dir), filename=Path(LAST_CHECKPOINT).stem, monitor=None,
                                   save_top_k=1, every_n_epochs=1, enable_version_counter=False)


class _DropLightningTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("💡 Tip:")


_DROP_LIGHTNING_TIPS = _DropLightningTips()


def _quiet_lightning() -> None:
    """Lightning 2.6 advertises a cloud logger on every run, its pytree helper trips a deprecation warning of
    newer torch, and it warns that the checkpoint folder is not empty (it holds run.json): nothing a user can
    act on."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DROP_LIGHTNING_TIPS)  # the same object: added once however often
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # The checkpoint folder holds run.json before the first checkpoint, by design (it says what they are for).
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def build_trainer(settings: TrainSettings, checkpoint_dir: Path, live_dir: Path | None,
                  callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """The Trainer owns devices, precision, distribution, checkpoints and logging; `callbacks` come first."""
    from lightning.pytorch.callbacks import EMAWeightAveraging, LearningRateMonitor

    _quiet_lightning()
    cuda = _cuda_run(settings)
    callbacks = [
        *callbacks,
        _last_checkpoint(checkpoint_dir),
        _step_progress_bar(),
    ]
    if settings.ema_decay > 0:
        callbacks.append(EMAWeightAveraging(decay=settings.ema_decay))
    logger = False
    if live_dir is not None:
        logger = _dvclive_logger(live_dir)
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    deterministic = settings.deterministic if settings.deterministic != "auto" else ("warn" if cuda else True)
    precision = settings.precision if settings.precision != "auto" else ("bf16-mixed" if cuda else "32-true")
    # These five are passed as Lightning takes them, so Lightning is the one to judge them; its refusal is
    # re-raised naming the keys, because a user reads params.yaml, not Trainer's signature.
    hardware = {"accelerator": settings.accelerator, "devices": settings.devices, "num_nodes": settings.num_nodes,
                "strategy": settings.strategy, "precision": precision}
    try:
        trainer = L.Trainer(
            **hardware, max_steps=settings.max_steps, max_epochs=-1,
            gradient_clip_val=settings.gradient_clip or None, deterministic=deterministic, logger=logger,
            callbacks=callbacks, log_every_n_steps=1, num_sanity_val_steps=0, enable_model_summary=False,
        )
    except (ValueError, TypeError, MisconfigurationException) as exc:
        given = ", ".join(f"train.{key}={value!r}" for key, value in hardware.items())
        raise ImrestoreError(f"params.yaml: Lightning cannot train with {given}: {exc}") from None
    _require_a_launcher_for_several_nodes(trainer)
    return trainer


def _require_a_launcher_for_several_nodes(trainer: L.Trainer) -> None:
    """Several nodes need a launcher (SLURM's srun, torchrun) to say which node this is and where node 0 listens.
    Without one, Lightning falls back to node 0 on 127.0.0.1 and waits for the other nodes' processes until the
    process group's timeout (30 minutes) instead of failing."""
    from lightning.fabric.plugins.environments import LightningEnvironment

    environment = trainer.strategy.cluster_environment if hasattr(trainer.strategy, "cluster_environment") else None
    unlaunched = isinstance(environment, LightningEnvironment) and not {"MASTER_ADDR", "NODE_RANK"} & set(os.environ)
    if trainer.num_nodes > 1 and unlaunched:
        raise ImrestoreError(
            f"params.yaml: train.num_nodes is {trainer.num_nodes}, but no cluster launcher started this process "
            "(expected SLURM's srun, torchrun, or MASTER_ADDR and NODE_RANK set on every node; found none of them), "
            "so it would wait for the other nodes forever; README, \"GPU and cluster training\", shows both launchers")


@dataclass(frozen=True)
class TrainConfig:
    """What train@<task> reads from params.yaml, parsed: the model, the `train` section for the task, and the
    patch geometry its cache must have been cut with (None: not checked, for callers outside the pipeline)."""

    task: str
    model: ModelConfig
    train: TrainSettings
    patches: PatchGeometry | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any], task: str) -> TrainConfig:
        from imrestore.data.patches import PatchGeometry

        if task not in TASKS:
            raise ImrestoreError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
        geometry = (params.get("patches") or {}).get(TASKS[task])
        return cls(task, ModelConfig.from_params(params.get("model")),
                   TrainSettings.for_task(params.get("train"), task),
                   None if geometry is None else PatchGeometry.for_dataset(TASKS[task], geometry))


def train(config: TrainConfig, cache_dir: Path, checkpoint_dir: Path, model_dir: Path, live_dir: Path | None,
          callbacks: Sequence[L.Callback] = ()) -> RestorationModule:
    """Train `config.task` on its patch cache, resuming from `checkpoint_dir` when it holds this same run.

    `callbacks` join the Trainer's own (benchmarks/training_curve.py measures the test PSNR through one)."""
    from imrestore.data.datamodule import RestorationDataModule
    from imrestore.data.patches import check_geometry_matches, read_meta

    task, settings, optim, model = config.task, config.train, config.train.optim, config.model
    L.seed_everything(settings.seed, workers=True)
    cuda = _cuda_run(settings)
    channels_last = settings.channels_last if settings.channels_last != "auto" else cuda
    module = RestorationModule(model.to_params(), dataclasses.asdict(optim), channels_last=bool(channels_last))
    if settings.compile:
        module.net = torch.compile(module.net)
    cache = read_meta(Path(cache_dir))  # also a clear error when the cache is missing
    if config.patches is not None:  # the stage's: a cache cut with other geometry is refused
        check_geometry_matches(cache, config.patches, Path(cache_dir), f"patches.{TASKS[task]}")
    if settings.crop > cache["size"]:  # the data module would say so too, but only once the old run is wiped
        raise invalid(f"params.yaml: train.crop ({task})",
                      f"at most {cache['size']}, the side of the patches in {cache_dir} that its crops are cut from "
                      f"(patches.{TASKS[task]}.crop_size; README, \"Real data\", gives the full-size geometry)",
                      settings.crop)
    val_crop = min(settings.val_crop, cache["size"]) if settings.val_crop else None
    data = RestorationDataModule(cache_dir, crop=settings.crop, batch_size=settings.batch_size, val_crop=val_crop,
                                 steps_per_epoch=settings.steps_per_epoch, num_workers=settings.num_workers,
                                 device_cache=settings.device_cache, dihedral=settings.dihedral,
                                 color_jitter=settings.color_jitter, seed=settings.seed)

    # Everything the checkpoints depend on: params, data, the tensors' names and shapes, and the training code
    # itself. A checkpoint of anything else is never resumed; resuming is for runs that were interrupted.
    run = {"task": task, "model": model.to_params(), "train": dataclasses.asdict(settings),
           "cache": cache["subsets"],
           "tensors": {name: list(t.shape) for name, t in module.net.state_dict().items()},
           "code": training_code_digest()}
    last = Path(checkpoint_dir) / LAST_CHECKPOINT
    run_file = Path(checkpoint_dir) / RUN_FILE
    resume = last.is_file() and run_file.is_file() and json.loads(run_file.read_text()) == json.loads(json.dumps(run))
    # Built before anything is removed: a setting Lightning refuses must not cost the previous run's checkpoints.
    trainer = build_trainer(settings, checkpoint_dir, live_dir, callbacks)
    if not resume:  # checkpoints of another configuration (or none): start afresh
        atomic.remove(Path(checkpoint_dir))
        Path(checkpoint_dir).mkdir(parents=True)
        atomic.write_json(run_file, run)
        if live_dir is not None:
            atomic.remove(Path(live_dir))
    checkpoint = torch.load(last, map_location="cpu", weights_only=True) if resume else None
    if checkpoint is not None and checkpoint["global_step"] >= settings.max_steps:
        # The run had finished (its weights were lost or are asked for again): export what it ended with. The
        # checkpoint's state_dict holds the EMA average when EMA is on. A Trainer would only reload it to do no
        # steps, and reloading twice (model, then EMA state) is not a no-op for Lightning's averaging callback.
        module.net.load_state_dict({key.removeprefix("net."): value for key, value in checkpoint["state_dict"].items()
                                    if key.startswith("net.")})
    else:
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume else None)
    export_weights(module, model_dir, task)
    return module
