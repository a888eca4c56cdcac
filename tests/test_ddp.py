"""Real multi-process DDP on CPU (gloo): two ranks through `imrestore.training.train`, as Lightning launches them.

Lightning's `ddp` strategy starts rank 1 by running the same command again, so the run is a script of its own
(`ddp_run.py`, written here), not a function in this process. Each rank records what it drew and the weights
it ended each step with; the test reads both records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_training import TINY_MODEL, noisy_cache

pytestmark = pytest.mark.timeout(600)

RUN = '''
import hashlib, json, os, sys
from pathlib import Path
import lightning as L
from imrestore.training import TrainConfig, train

class Record(L.Callback):
    """Per rank: a hash of each batch it trained on and of its weights after each step."""
    def __init__(self, out):
        self.out, self.rows = Path(out), []
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_index):
        weights = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in module.net.parameters()))
        self.rows.append({"step": trainer.global_step, "batch": hashlib.sha256(batch[0].numpy().tobytes()).hexdigest(),
                          "weights": weights.hexdigest()})
    def on_train_batch_start(self, trainer, module, batch, batch_index):
        if trainer.global_step == int(os.environ.get("STOP_AT_STEP", -1)):  # a kill, after a checkpoint
            os._exit(3)
    def on_train_end(self, trainer, module):
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.rows))

root = Path(sys.argv[1])
params = json.loads((root / "params.json").read_text())
train(TrainConfig.from_params(params, "denoise"), cache_dir=root / "cache", checkpoint_dir=root / "ckpt",
      model_dir=root / "model", live_dir=root / "live", callbacks=[Record(root)])
'''


def run_ddp(root: Path, stop_at_step: int | None = None, **train_overrides) -> subprocess.CompletedProcess:
    params = {"model": TINY_MODEL,
              "train": {"max_steps": 4, "steps_per_epoch": 4, "crop": 16, "batch_size": 2, "num_workers": 0,
                        "accelerator": "cpu", "devices": 2, "strategy": "ddp", **train_overrides}}
    (root / "params.json").write_text(json.dumps(params))
    (root / "ddp_run.py").write_text(RUN)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    if stop_at_step is not None:
        env["STOP_AT_STEP"] = str(stop_at_step)
    return subprocess.run([sys.executable, str(root / "ddp_run.py"), str(root)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=500)


@pytest.mark.parametrize("device_cache", [False, True], ids=["dataloader", "device_resident"])
def test_two_ranks_draw_different_batches_and_end_every_step_with_the_same_weights(tmp_path, device_cache):
    noisy_cache(tmp_path / "cache")
    done = run_ddp(tmp_path, device_cache=device_cache)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [len(r) for r in ranks] == [4, 4]
    for mine, theirs in zip(*ranks):
        assert mine["step"] == theirs["step"]
        assert mine["batch"] != theirs["batch"]  # each rank trains on its own share
        assert mine["weights"] == theirs["weights"]  # gradients averaged: one model
    assert len({row["batch"] for rank in ranks for row in rank}) == 8
    # One writer: rank 0's checkpoints, run record, curves and exported weights, nothing from rank 1.
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["last.ckpt", "run.json"]
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "model.pt"]
    steps = [line.split("\t")[0] for line in (tmp_path / "live/plots/metrics/train/loss.tsv").read_text().split("\n")[1:] if line]
    assert steps == ["0", "1", "2", "3"]


def test_a_ddp_run_killed_midway_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path):
    import torch

    for name in ("whole", "killed"):
        noisy_cache(tmp_path / name / "cache")
    assert run_ddp(tmp_path / "whole", steps_per_epoch=2).returncode == 0
    killed = run_ddp(tmp_path / "killed", stop_at_step=2, steps_per_epoch=2)
    assert killed.returncode != 0 and not (tmp_path / "killed" / "model").exists()
    assert (tmp_path / "killed" / "ckpt" / "last.ckpt").is_file()  # the checkpoint of step 2 survived
    resumed = run_ddp(tmp_path / "killed", steps_per_epoch=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole, again = (torch.load(tmp_path / name / "model" / "model.pt", weights_only=True) for name in ("whole", "killed"))
    assert whole.keys() == again.keys()
    for key in whole:
        torch.testing.assert_close(again[key], whole[key], rtol=0, atol=0)
    rank0 = json.loads((tmp_path / "killed" / "rank0.json").read_text())
    assert [row["step"] for row in rank0] == [3, 4]  # the resumed run trained only the steps that were left
