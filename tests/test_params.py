"""params.yaml is read as DVC reads it, so a value DVC writes with `-S` means the same to the stages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from dvc.utils.serialize import parse_yaml as dvc_parse_yaml

from imrestore.errors import ImrestoreError
from imrestore.params import compose, load_params, parse_yaml
from imrestore.training import TrainSettings

# What `dvc exp run -S key=value` writes back for values users type, and YAML 1.1/1.2 differences.
AMBIGUOUS = """\
lr_dvc_writes: 1e-07
lr_plain: 0.0000001
lr_dotted: 1.0e-3
exponent_int: 1e3
boolean_1_1: yes
boolean: true
octal_1_1: 010
nothing: null
sexagesimal: 1:30
"""


def test_params_are_parsed_exactly_as_dvc_parses_them(tmp_path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(AMBIGUOUS)
    ours = load_params(path)
    assert ours == dvc_parse_yaml(AMBIGUOUS, str(path))
    assert ours["lr_dvc_writes"] == pytest.approx(1e-7)  # PyYAML (YAML 1.1) reads the string '1e-07'
    assert ours["boolean_1_1"] == "yes"


def test_bad_params_files_are_named(tmp_path) -> None:
    with pytest.raises(ImrestoreError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ImrestoreError, match="bad.yaml is not valid YAML"):
        load_params(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ImrestoreError, match="expected a mapping at the top level, found list"):
        load_params(tmp_path / "list.yaml")


# ----------------------------------------------------------------------------- presets, composed from conf/

REPO = Path(__file__).resolve().parents[1]
PAPER = {"deblur": (13150, 1000), "denoise": (320, 500)}  # the paper's (steps, StepLR step) per task


def test_the_committed_params_yaml_is_what_conf_composes_to() -> None:
    """params.yaml is generated (dvc exp run recomposes it from conf/), so an edit to either alone would be lost
    or would make the committed record disagree with the next experiment's baseline."""
    assert compose(REPO) == (REPO / "params.yaml").read_text(encoding="utf-8"), "run `imrestore params`"


@pytest.mark.parametrize("task", ["deblur", "denoise"])
def test_each_preset_composes_its_values_into_the_train_section(task) -> None:
    cpu = TrainSettings.from_params(parse_yaml(compose(REPO))["train"], task)
    paper = TrainSettings.from_params(parse_yaml(compose(REPO, ["train=paper"]))["train"], task)
    full = TrainSettings.from_params(parse_yaml(compose(REPO, ["train=full"]))["train"], task)
    steps, step_size = PAPER[task]
    assert (paper[0].crop, paper[0].batch_size, paper[0].max_steps) == (128, 8, steps)
    assert (paper[1].loss, paper[1].optimizer, paper[1].lr, paper[1].scheduler, paper[1].step_size) == \
        ("mse", "adam", 0.01, "step", step_size)
    assert (full[0].crop, full[0].batch_size, full[0].compile, full[1].lr) == (256, 32, True, 1e-3)
    assert (cpu[0].crop, cpu[0].max_steps, cpu[1].lr) == (64, 600, 2e-3)
    assert paper[0].seed == full[0].seed == cpu[0].seed, "a preset changes only what it names"


def test_a_per_task_value_fills_a_null_and_a_key_set_twice_is_refused() -> None:
    train = {"max_steps": None, "crop": 64, "optim": {"lr": 1e-3, "step_size": None},
             "per_task": {"deblur": {"max_steps": 7, "optim": {"step_size": 3}}, "denoise": {}}}
    settings, optim = TrainSettings.from_params(train, "deblur")
    assert (settings.max_steps, optim.step_size, optim.lr) == (7, 3, 1e-3)
    with pytest.raises(ImrestoreError, match=r"train.max_steps must be a positive integer, found None"):
        TrainSettings.from_params(train, "denoise")  # nothing fills it
    twice = {**train, "max_steps": 50}
    with pytest.raises(ImrestoreError, match=r"train.max_steps is 50 and train.per_task.deblur.max_steps is 7; "
                                             r"set one of them and null the other"):
        TrainSettings.from_params(twice, "deblur")
    nested = {**train, "optim": {"step_size": 9}}
    with pytest.raises(ImrestoreError, match=r"train.optim.step_size is 9 and train.per_task.deblur.optim"):
        TrainSettings.from_params(nested, "deblur")
    for per_task, message in (({"deblr": {}}, r"unknown key train.per_task.deblr; expected one of deblur, denoise"),
                              ({"deblur": {"crops": 1}}, r"unknown key train.per_task.deblur.crops; expected one "
                                                         r"of .*batch_size"),
                              ({"deblur": {"optim": {"rate": 1}}}, r"unknown key train.per_task.deblur.optim.rate"),
                              ({"deblur": 5}, r"train.per_task.deblur must be a mapping of train keys, found 5")):
        with pytest.raises(ImrestoreError, match=message):
            TrainSettings.from_params({"per_task": per_task}, "deblur")


def test_the_retired_preset_key_says_what_replaced_it() -> None:
    with pytest.raises(ImrestoreError, match=r"train.preset is retired: .*dvc exp run -S train=<name>"):
        TrainSettings.from_params({"preset": "paper"}, "deblur")
    with pytest.raises(ImrestoreError, match=r"-S train.preset=paper: train.preset is retired"):
        compose(REPO, ["train.preset=paper"])
    with pytest.raises(ImrestoreError, match=r"cannot compose params.yaml: .*Could not find 'train/papr'"):
        compose(REPO, ["train=papr"])


RECORD_STAGE = """\
import json, sys
from imrestore.params import load_params
from imrestore.training import TrainSettings

settings, optim = TrainSettings.from_params(load_params()["train"], "deblur")
json.dump({"lr": optim.lr, "max_steps": settings.max_steps, "loss": optim.loss}, open("record.json", "w"))
"""


def test_dvc_exp_run_composes_a_preset_and_dvc_params_diff_names_its_values(tmp_path) -> None:
    """The real `dvc exp run` on the real conf/: `-S train=paper` composes params.yaml, a stage reads it with the
    project's loader, and `dvc params diff` shows the preset's values, not only its name. `-S train.optim.lr=1e-7`
    (which DVC writes as `1.0e-07`) reaches the stage as a number."""
    from tests.test_pipeline_e2e import sh

    shutil.copytree(REPO / "conf", tmp_path / "conf")
    (tmp_path / "record.py").write_text(RECORD_STAGE)
    (tmp_path / "dvc.yaml").write_text("stages:\n  record:\n    cmd: python record.py\n    deps: [record.py]\n"
                                       "    params: [train]\n    outs:\n      - record.json:\n          cache: false\n")
    sh("git", "init", "-q", cwd=tmp_path)
    sh("dvc", "init", "-q", cwd=tmp_path)
    for key, value in (("enabled", "true"), ("config_dir", "conf"), ("config_name", "config")):
        sh("dvc", "config", f"hydra.{key}", value, cwd=tmp_path)
    (tmp_path / "params.yaml").write_text(compose(tmp_path))
    sh("dvc", "repro", "-q", cwd=tmp_path)
    sh("git", "add", "-A", cwd=tmp_path)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "cpu preset", cwd=tmp_path)

    sh("dvc", "exp", "run", "-S", "train=paper", cwd=tmp_path)
    diff = json.loads(sh("dvc", "params", "diff", "--json", cwd=tmp_path).stdout)["params.yaml"]
    assert (diff["train.optim.lr"]["old"], diff["train.optim.lr"]["new"]) == (0.002, 0.01)
    assert (diff["train.optim.loss"]["old"], diff["train.optim.loss"]["new"]) == ("psnr", "mse")
    assert diff["train.per_task.deblur.max_steps"]["new"] == PAPER["deblur"][0]
    assert json.loads((tmp_path / "record.json").read_text()) == {"lr": 0.01, "max_steps": 13150, "loss": "mse"}

    sh("dvc", "exp", "run", "-S", "train.optim.lr=1e-7", cwd=tmp_path)
    assert "lr: 1.0e-07" in (tmp_path / "params.yaml").read_text(), "YAML 1.1 would read this as a string"
    assert json.loads((tmp_path / "record.json").read_text())["lr"] == pytest.approx(1e-7)
    assert parse_yaml((tmp_path / "params.yaml").read_text())["train"]["crop"] == 64, "composed from cpu again"

    refused = sh("dvc", "exp", "run", "-S", "train.preset=paper", cwd=tmp_path, check=False)
    assert refused.returncode != 0 and "train.preset" in refused.stderr + refused.stdout
