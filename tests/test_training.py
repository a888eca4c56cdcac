"""Real Lightning Trainer runs of the restoration module on tiny budgets (CPU)."""

from __future__ import annotations

import re
import shutil
import warnings

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from cache_builders import write_cache
from imrestore.data.datamodule import RestorationDataModule
from imrestore.errors import ImrestoreError
from imrestore.models.weights import load_network
from imrestore.training import (
    NonFiniteLossError,
    OptimConfig,
    RestorationModule,
    export_weights,
    learning_rate_factor,
    restoration_loss,
)

TINY_MODEL = {"blocks": 1, "features": 8, "dcn_kernel": 3}


def noisy_cache(root, count=24, size=24, seed=0):
    """Smooth clean patches and noisy versions of them: a denoising task a tiny net learns in steps."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    clean = np.stack([0.5 + 0.3 * np.sin(2 * np.pi * (x * rng.uniform(0.5, 2) + y * rng.uniform(0.5, 2)))[..., None]
                      * np.ones(3) for _ in range(count)])
    noisy = clean + rng.normal(0, 0.12, clean.shape)
    to_u8 = lambda a: np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)  # noqa: E731
    return write_cache(root, {"train": (to_u8(noisy), to_u8(clean)), "val": (to_u8(noisy[:4]), to_u8(clean[:4]))})


def data(root, **kwargs):
    return RestorationDataModule(root, crop=16, batch_size=4, num_workers=0, device_cache=False, **kwargs)


class LossLog(Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_index):
        self.losses.append(float(outputs["loss"]))


def trainer(tmp_path, **kwargs):
    defaults = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                    default_root_dir=tmp_path, deterministic=True)
    return L.Trainer(**{**defaults, **kwargs})


def test_a_tiny_fit_lowers_the_loss(tmp_path):
    L.seed_everything(0)
    log = LossLog()
    module = RestorationModule(TINY_MODEL, {"loss": "l1", "lr": 3e-3, "max_steps": 40, "warmup_steps": 4})
    trainer(tmp_path, max_steps=40, callbacks=[log], enable_checkpointing=False).fit(
        module, datamodule=data(noisy_cache(tmp_path / "cache"), steps_per_epoch=10))
    first, last = np.mean(log.losses[:5]), np.mean(log.losses[-5:])
    assert len(log.losses) == 40 and last < 0.8 * first
    assert "val/psnr" in trainer_metrics(module) and "val/ssim" in trainer_metrics(module)


@pytest.mark.parametrize("scale", [0.0, 0.1])
def test_the_dcn_offset_predictors_learn_at_their_own_scaled_lr(tmp_path, scale):
    L.seed_everything(0)
    module = RestorationModule(TINY_MODEL, {"lr": 2e-3, "max_steps": 8, "offset_lr_scale": scale})
    groups = module.configure_optimizers()["optimizer"].param_groups
    assert [g["name"] for g in groups] == ["network", "dcn_offsets"]
    assert [g["lr"] for g in groups] == pytest.approx([2e-3, 2e-3 * scale])
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in module.parameters())  # every parameter, each once
    offsets = {name: p.detach().clone() for name, p in module.named_parameters() if ".offset_mask." in name}
    others = {name: p.detach().clone() for name, p in module.named_parameters() if ".offset_mask." not in name}
    assert offsets and all(not p.any() for p in offsets.values())  # zero-initialised: a regular grid
    trainer(tmp_path, max_steps=8, enable_checkpointing=False).fit(
        module, datamodule=data(noisy_cache(tmp_path / "cache"), steps_per_epoch=8))
    after = dict(module.named_parameters())
    moved = [name for name, p in offsets.items() if not torch.equal(after[name], p)]
    assert bool(moved) == (scale > 0)  # lr 0 holds the sampling grid regular; weight decay of zero is zero
    assert any(not torch.equal(after[name], p) for name, p in others.items())


def trainer_metrics(module):
    return module.trainer.callback_metrics


def test_resuming_after_an_interruption_ends_with_the_same_weights(tmp_path):
    cache = noisy_cache(tmp_path / "cache")
    optim = {"lr": 2e-3, "max_steps": 12}

    def run(root, epochs, resume=None):
        L.seed_everything(0)
        module = RestorationModule(TINY_MODEL, optim)
        checkpoints = ModelCheckpoint(dirpath=str(root), save_last=True, save_top_k=0, every_n_epochs=1)
        trainer(tmp_path, max_epochs=epochs, callbacks=[checkpoints], num_sanity_val_steps=0).fit(
            module, datamodule=data(cache, steps_per_epoch=4), ckpt_path=resume)
        return module

    straight = run(tmp_path / "straight", 3)
    run(tmp_path / "interrupted", 1)  # the run killed after its first epoch
    resumed = run(tmp_path / "interrupted", 3, resume=tmp_path / "interrupted" / "last.ckpt")
    for key, value in straight.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)


def test_the_checkpoint_is_the_same_bytes_wherever_the_run_lives_and_resumes_after_a_move(tmp_path):
    # dvc.lock hashes the checkpoint folder: absolute paths in it changed the lock with every clone's location.
    from imrestore.training import TrainConfig, train

    cache = noisy_cache(tmp_path / "cache")
    params = {"model": TINY_MODEL, "train": {"max_steps": 4, "steps_per_epoch": 2, "crop": 16, "batch_size": 2,
                                             "num_workers": 0}}

    class Killed(Exception):
        pass

    class KillAtStep(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_index):
            if trainer.global_step == 2:  # after the checkpoint of the first epoch
                raise Killed

    def run(place, callbacks=()):
        return train(TrainConfig.from_params(params, "denoise"), cache_dir=cache,
                     checkpoint_dir=tmp_path / place / "ckpt", model_dir=tmp_path / place / "model", live_dir=None,
                     callbacks=callbacks)

    whole = run("whole").net.state_dict()
    run("elsewhere/deeper")
    written = (tmp_path / "whole" / "ckpt" / "last.ckpt").read_bytes()
    assert written == (tmp_path / "elsewhere" / "deeper" / "ckpt" / "last.ckpt").read_bytes()
    assert str(tmp_path / "whole").encode() not in written  # (the cache folder is named as train() was given it)

    with pytest.raises(Killed):
        run("before", [KillAtStep()])
    shutil.move(tmp_path / "before", tmp_path / "after")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = run("after")
    assert resumed.trainer.global_step == 4 and not [w for w in caught if "dirpath has changed" in str(w.message)]
    moved = tmp_path / "after" / "ckpt"
    assert resumed.trainer.checkpoint_callback.best_model_path == str((moved / "last.ckpt").resolve())
    assert sorted(p.name for p in moved.iterdir()) == ["last.ckpt", "run.json"]
    for key, value in whole.items():
        torch.testing.assert_close(resumed.net.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_a_nan_loss_stops_training_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    good = (torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16))
    bad = (torch.full((2, 3, 16, 16), float("nan")), torch.rand(2, 3, 16, 16))
    module = RestorationModule(TINY_MODEL, {"max_steps": 10})
    checkpoints = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True, save_top_k=0, every_n_train_steps=1)
    with pytest.raises(NonFiniteLossError, match=r"the psnr loss became nan at step 2; training stopped"):
        batches = torch.utils.data.DataLoader([good, good, bad, good], batch_size=None)
        trainer(tmp_path, max_steps=10, callbacks=[checkpoints]).fit(module, train_dataloaders=batches)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in saved["state_dict"].values())


def test_a_non_finite_validation_output_stops_training_with_a_message(tmp_path):
    """The eval-mode divergence used to surface only at `evaluate`, as a NaN PSNR in the curves before it."""
    good = (torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16))
    diverged = (torch.full((2, 3, 16, 16), float("inf")), torch.rand(2, 3, 16, 16))
    module = RestorationModule(TINY_MODEL, {"max_steps": 4})
    with pytest.raises(NonFiniteLossError, match=r"validation at step 2: 1536 of 1536 output values are NaN or infinite"):
        trainer(tmp_path, max_steps=4, val_check_interval=2, num_sanity_val_steps=0).fit(
            module, train_dataloaders=torch.utils.data.DataLoader([good] * 4, batch_size=None),
            val_dataloaders=torch.utils.data.DataLoader([good, diverged], batch_size=None))


def test_exported_weights_round_trip_with_weights_only(tmp_path):
    module = RestorationModule(TINY_MODEL, {})
    export_weights(module, tmp_path / "model")
    net = load_network(tmp_path / "model")
    x = torch.rand(1, 3, 21, 18)
    with torch.no_grad():
        torch.testing.assert_close(net(x), module.net(x))
    (tmp_path / "model" / "config.json").write_text('{"model": {"blocks": 2, "features": 8}}')
    with pytest.raises(ImrestoreError, match="does not fit the model in config.json"):
        load_network(tmp_path / "model")


def test_losses_and_schedules():
    out, target = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    assert restoration_loss("mse", out, target).item() == pytest.approx(0.25)
    assert restoration_loss("l1", out, target).item() == pytest.approx(0.5)
    assert restoration_loss("charbonnier", out, target).item() == pytest.approx(0.5, abs=1e-5)
    assert restoration_loss("psnr", out, target).item() == pytest.approx(-6.0206, abs=1e-3)  # −PSNR of MSE 0.25
    cosine = OptimConfig(warmup_steps=10, max_steps=110)
    assert learning_rate_factor(0, cosine) == pytest.approx(0.1) and learning_rate_factor(10, cosine) == 1.0
    assert learning_rate_factor(110, cosine) == pytest.approx(cosine.min_lr_ratio)
    step = OptimConfig(scheduler="step", step_size=1000, gamma=0.5)
    assert [learning_rate_factor(s, step) for s in (0, 999, 1000, 2500)] == [1.0, 1.0, 0.5, 0.25]


@pytest.mark.parametrize(
    ("section", "message"),
    [({"loss": "ssim"}, "params.yaml: train.optim.loss must be one of 'mse', 'l1', 'charbonnier', 'psnr', found 'ssim'"),
     ({"lr": 0}, "params.yaml: train.optim.lr must be a number > 0, found 0"),
     ({"warmup_steps": 1.5}, "params.yaml: train.optim.warmup_steps must be an integer ≥ 0, found 1.5"),
     ({"max_steps": 10}, "params.yaml: unknown key train.optim.max_steps"),  # the run's length is train.max_steps
     ({"momentum": 0.9}, "params.yaml: unknown key train.optim.momentum")],
)
def test_bad_optim_params_are_named(section, message):
    with pytest.raises(ImrestoreError, match=re.escape(message)):
        OptimConfig.from_params(section)


def test_the_training_run_exports_ema_weights_resumes_only_itself(tmp_path):
    from imrestore.training import TrainConfig, train

    cache = noisy_cache(tmp_path / "cache")
    params = {"model": TINY_MODEL, "train": {"max_steps": 4, "steps_per_epoch": 2, "crop": 16, "batch_size": 2,
                                             "num_workers": 0, "ema_decay": 0.5, "optim": {"lr": 1e-2}}}
    dirs = {"cache_dir": cache, "checkpoint_dir": tmp_path / "ckpt", "model_dir": tmp_path / "model",
            "live_dir": tmp_path / "live"}
    module = train(TrainConfig.from_params(params, "denoise"), **dirs)
    exported = load_network(tmp_path / "model").state_dict()
    assert (tmp_path / "ckpt" / "last.ckpt").is_file() and (tmp_path / "live" / "metrics.json").is_file()
    # EMA: the same run without averaging ends with other weights; the exported ones are the average
    plain = {**params, "train": {**params["train"], "ema_decay": 0.0}}
    train(TrainConfig.from_params(plain, "denoise"), cache_dir=cache, checkpoint_dir=tmp_path / "ckpt2",
          model_dir=tmp_path / "plain", live_dir=None)
    assert not torch.equal(load_network(tmp_path / "plain").state_dict()["head.weight"], exported["head.weight"])
    torch.testing.assert_close(exported["head.weight"], module.net.state_dict()["head.weight"])

    curves = (tmp_path / "live" / "metrics.json").read_text()
    again = train(TrainConfig.from_params(params, "denoise"), **dirs)  # the same run, finished: exported, not trained
    assert (tmp_path / "live" / "metrics.json").read_text() == curves
    for key, value in exported.items():
        torch.testing.assert_close(again.net.state_dict()[key], value, rtol=0, atol=0)
        torch.testing.assert_close(load_network(tmp_path / "model").state_dict()[key], value)

    changed = {**params, "model": {**TINY_MODEL, "blocks": 2}}
    fresh = train(TrainConfig.from_params(changed, "denoise"), **dirs)  # another config: afresh, never loads the old
    assert fresh.trainer.global_step == 4 and load_network(tmp_path / "model").config.blocks == 2


def test_training_refuses_a_patch_cache_cut_with_other_geometry_than_params(tmp_path):
    """DVC once served a stale cache for a changed patch size; training now checks what it is given."""
    from imrestore.training import TrainConfig, train

    cache = noisy_cache(tmp_path / "sidd", size=24)
    params = {"model": TINY_MODEL, "train": {"max_steps": 1, "crop": 16, "batch_size": 2, "num_workers": 0},
              "patches": {"sidd": {"crop_size": 32, "step": 16, "thresh_size": 0}}}
    with pytest.raises(ImrestoreError, match=r"sidd/cache\.json records patches cut with crop_size 24 \(params\.yaml: "
                                             r"32\).*Run `dvc repro patches@sidd` to rebuild it"):
        train(TrainConfig.from_params(params, "denoise"), cache_dir=cache, checkpoint_dir=tmp_path / "ckpt",
              model_dir=tmp_path / "model", live_dir=None)
    assert not (tmp_path / "model").exists()


def test_an_unknown_train_key_lists_every_allowed_key_including_optim():
    from imrestore.training import TrainSettings

    with pytest.raises(ImrestoreError, match=r"unknown key train\.learning_rate; expected one of .*\boptim\b"):
        TrainSettings.for_task({"learning_rate": 1e-3}, "denoise")


def test_a_training_run_says_nothing_a_user_cannot_act_on_and_titles_its_epochs(tmp_path, caplog):
    from imrestore.training import TrainConfig, _step_progress_bar, train

    cache = noisy_cache(tmp_path / "cache")
    params = {"model": TINY_MODEL, "train": {"max_steps": 4, "steps_per_epoch": 2, "crop": 16, "batch_size": 2,
                                             "num_workers": 0}}
    caplog.set_level("INFO")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = train(TrainConfig.from_params(params, "denoise"), cache_dir=cache, checkpoint_dir=tmp_path / "ckpt",
                       model_dir=tmp_path / "m", live_dir=None)
    assert not [r for r in caplog.records if "Tip:" in r.getMessage()]
    assert not [w for w in caught if "LeafSpec" in str(w.message) or "Checkpoint directory" in str(w.message)]
    [bar] = [c for c in module.trainer.callbacks if type(c).__name__ == type(_step_progress_bar()).__name__]
    assert bar._get_train_description(0) == "Epoch 1/2"  # Lightning's own: "Epoch 0/-2" (max_epochs=-1)


@pytest.mark.parametrize("override, named", [
    ({"precision": "bf16-mix"}, r"train\.precision='bf16-mix'.*Precision 'bf16-mix' is invalid"),
    ({"devices": 0}, r"train\.devices=0.*devices=0"),
    ({"strategy": "dpp"}, r"train\.strategy='dpp'"),
    ({"accelerator": "tpu-ish"}, r"train\.accelerator='tpu-ish'"),
    ({"num_nodes": 2}, r"train\.num_nodes is 2, but no cluster launcher started this process"),
    ({"crop": 32}, r"train\.crop \(denoise\) must be at most 24, the side of the patches in .*"
                   r"patches\.sidd\.crop_size"),
])
def test_a_setting_training_cannot_use_is_refused_before_the_previous_run_is_touched(tmp_path, monkeypatch, override,
                                                                                     named):
    # A changed setting starts a run afresh, which removes the old checkpoints and curves; a typo must not.
    from imrestore.training import TrainConfig, train

    for launcher_variable in ("MASTER_ADDR", "NODE_RANK", "SLURM_NTASKS", "SLURM_JOB_NAME", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(launcher_variable, raising=False)
    cache = noisy_cache(tmp_path / "cache")
    params = {"model": TINY_MODEL, "train": {"max_steps": 2, "steps_per_epoch": 2, "crop": 16, "batch_size": 2,
                                             "num_workers": 0}}
    dirs = {"cache_dir": cache, "checkpoint_dir": tmp_path / "ckpt", "model_dir": tmp_path / "model",
            "live_dir": tmp_path / "live"}
    train(TrainConfig.from_params(params, "denoise"), **dirs)
    written = lambda: {path: path.read_bytes() for name in ("ckpt", "model", "live")  # noqa: E731
                       for path in sorted((tmp_path / name).rglob("*")) if path.is_file()}
    before = written()
    assert tmp_path / "ckpt" / "last.ckpt" in before and tmp_path / "live" / "metrics.json" in before

    changed = {**params, "train": {**params["train"], **override}}
    with pytest.raises(ImrestoreError, match=named):
        train(TrainConfig.from_params(changed, "denoise"), **dirs)
    assert written() == before


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_numpy_cannot_take_is_refused_by_name(seed):
    from imrestore.training import TrainSettings

    with pytest.raises(ImrestoreError, match=rf"train\.seed must be an integer .*4294967295, found {seed}"):
        TrainSettings.for_task({"seed": seed}, "denoise")
