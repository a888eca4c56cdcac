"""params.yaml is read as DVC reads it, so a value DVC writes with `-S` means the same to the stages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dvc.utils.serialize import parse_yaml as dvc_parse_yaml

from imrestore.app.cli import check_params
from imrestore.errors import ImrestoreError
from imrestore.params import compose, load_params, parse_yaml
from imrestore.training import TrainSettings, with_task_values

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


# ----------------------------------------------------------------------------- sections: one parser for all


def leaves(node, path=()):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    else:
        yield path


def test_every_key_of_params_yaml_is_checked_and_named_in_one_format() -> None:
    """A value no rule accepts, put in each leaf of params.yaml in turn, is refused with
    `params.yaml: <that key or its section> must be …` (or, for a key with a cross-key rule, the key it breaks)."""
    params = load_params(REPO / "params.yaml")
    assert check_params(params)
    checked = 0
    for path in leaves(params):
        if path[:2] in {("train", "per_task")}:
            continue  # test_a_per_task_value_fills… covers the per-task values
        broken = json.loads(json.dumps(params))
        node = broken
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = [[1]]  # no section takes a list of lists anywhere
        with pytest.raises(ImrestoreError) as refused:
            check_params(broken)
        message = str(refused.value)
        dotted = ".".join(path)
        named = message.removeprefix("params.yaml: ").split(" must be ")[0]
        assert message.startswith("params.yaml: ") and " must be " in message and dotted.startswith(named), message
        assert message.endswith("found [[1]]") or "baselines" in dotted, message
        checked += 1
    assert checked > 60  # every section's keys, not a few


def test_a_section_built_directly_is_checked_like_one_from_params() -> None:
    from imrestore.models.network import ModelConfig
    from imrestore.training import OptimConfig, TrainSettings

    with pytest.raises(ImrestoreError, match=r"^params\.yaml: model\.blocks must be an integer ≥ 1, found 0$"):
        ModelConfig(blocks=0)
    with pytest.raises(ImrestoreError, match=r"^params\.yaml: train\.optim\.lr must be a number > 0, found -1$"):
        OptimConfig(lr=-1)
    assert OptimConfig(lr=1).lr == 1.0 and isinstance(OptimConfig(lr=1).lr, float)  # `lr: 1` is the number 1.0
    assert TrainSettings(max_steps=7).optim.max_steps == 7  # the schedule spans the run, however it was built


def test_a_nested_unknown_key_lists_the_keys_allowed_there() -> None:
    from imrestore.models.network import ModelConfig

    with pytest.raises(ImrestoreError, match=r"^params\.yaml: unknown key model\.nafnet\.depth; expected one of "
                                             r"dec_blocks, enc_blocks, middle_blocks, width$"):
        ModelConfig.from_params({"nafnet": {"depth": 3}})
    with pytest.raises(ImrestoreError, match=r"^models/x/config\.json: model\.nafnet\.width must be an integer ≥ 1, "
                                             r"found 0$"):
        ModelConfig.from_params({"nafnet": {"width": 0}}, origin="models/x/config.json")


def test_a_required_key_that_is_missing_says_so() -> None:
    from imrestore.acquire.sources import SourceConfig

    with pytest.raises(ImrestoreError, match=r"^params\.yaml: download\.sidd\.source must be 'sample', a URL or a "
                                             r"path, found nothing$"):
        SourceConfig.for_dataset("sidd", {"sha256": None})


# ----------------------------------------------------------------------------- presets, composed from conf/

REPO = Path(__file__).resolve().parents[1]
PAPER = {"deblur": (13150, 1000), "denoise": (320, 500)}  # the paper's (steps, StepLR step) per task


def test_the_committed_params_yaml_is_what_conf_composes_to() -> None:
    """params.yaml is generated (dvc exp run recomposes it from conf/), so an edit to either alone would be lost
    or would make the committed record disagree with the next experiment's baseline."""
    assert compose(REPO) == (REPO / "params.yaml").read_text(encoding="utf-8"), "run `imrestore params`"


@pytest.mark.parametrize("task", ["deblur", "denoise"])
def test_each_preset_composes_its_values_into_the_train_section(task) -> None:
    cpu = TrainSettings.for_task(parse_yaml(compose(REPO))["train"], task)
    paper = TrainSettings.for_task(parse_yaml(compose(REPO, ["train=paper"]))["train"], task)
    full = TrainSettings.for_task(parse_yaml(compose(REPO, ["train=full"]))["train"], task)
    steps, step_size = PAPER[task]
    assert (paper.crop, paper.batch_size, paper.max_steps, paper.optim.max_steps) == (128, 8, steps, steps)
    assert (paper.optim.loss, paper.optim.optimizer, paper.optim.lr, paper.optim.scheduler, paper.optim.step_size) == \
        ("mse", "adam", 0.01, "step", step_size)
    assert (full.crop, full.batch_size, full.compile, full.optim.lr) == (256, 32, True, 1e-3)
    assert (cpu.crop, cpu.max_steps, cpu.optim.lr) == (64, {"deblur": 600, "denoise": 1000}[task], 2e-3)
    assert full.max_steps == full.optim.max_steps == 200_000, "full's steps are for both tasks"
    assert paper.seed == full.seed == cpu.seed, "a preset changes only what it names"


def test_a_per_task_value_fills_a_null_and_a_value_set_for_every_task_wins_out_loud() -> None:
    train = {"max_steps": None, "crop": 64, "optim": {"lr": 1e-3, "step_size": None},
             "per_task": {"deblur": {"max_steps": 7, "optim": {"step_size": 3}},
                          "denoise": {"optim": {"step_size": 5}}}}
    settings = TrainSettings.for_task(train, "deblur")
    assert (settings.max_steps, settings.optim.step_size, settings.optim.lr) == (7, 3, 1e-3)
    assert with_task_values(train, "deblur")[1] == [], "nothing outvoted"
    with pytest.raises(ImrestoreError, match=r"^params\.yaml: train\.max_steps must be an integer ≥ 1, found None$"):
        TrainSettings.for_task(train, "denoise")  # nothing fills it
    both = {**train, "max_steps": 50, "optim": {"lr": 1e-3, "step_size": 9}}  # -S train.max_steps=50 …
    for task in ("deblur", "denoise"):
        settings = TrainSettings.for_task(both, task)
        assert (settings.max_steps, settings.optim.step_size) == (50, 9), task
    assert with_task_values(both, "deblur")[1] == [
        "train.max_steps is 50, so train.per_task.deblur.max_steps (7) is not used",
        "train.optim.step_size is 9, so train.per_task.deblur.optim.step_size (3) is not used"]
    assert with_task_values({**train, "max_steps": 7}, "deblur")[1] == [], "the same value twice outvotes nothing"
    for per_task, message in (({"deblr": {}}, r"unknown key train.per_task.deblr; expected one of deblur, denoise"),
                              ({"deblur": {"crops": 1}}, r"unknown key train.per_task.deblur.crops; expected one "
                                                         r"of .*batch_size"),
                              ({"deblur": {"optim": {"rate": 1}}}, r"unknown key train.per_task.deblur.optim.rate"),
                              ({"deblur": 5}, r"train.per_task.deblur must be a mapping of train keys, found 5")):
        with pytest.raises(ImrestoreError, match=message):
            TrainSettings.for_task({"per_task": per_task}, "deblur")


def test_the_retired_preset_key_says_what_replaced_it() -> None:
    with pytest.raises(ImrestoreError, match=r"train.preset is retired: .*dvc exp run -S train=<name>"):
        TrainSettings.for_task({"preset": "paper"}, "deblur")
    with pytest.raises(ImrestoreError, match=r"-S train.preset=paper: train.preset is retired"):
        compose(REPO, ["train.preset=paper"])
    with pytest.raises(ImrestoreError, match=r"cannot compose params.yaml: .*Could not find 'train/papr'"):
        compose(REPO, ["train=papr"])


RECORD_STAGE = """\
import json, sys
from imrestore.params import load_params
from imrestore.training import TrainSettings

train = TrainSettings.for_task(load_params()["train"], "deblur")
json.dump({"lr": train.optim.lr, "max_steps": train.max_steps, "loss": train.optim.loss}, open("record.json", "w"))
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


# ------------------------------------------------------------------------------ `imrestore params`, the command


@pytest.fixture
def composing_repo(tmp_path) -> Path:
    """What `imrestore params` reads and writes: .dvc/config ([hydra]), conf/ and params.yaml."""
    (tmp_path / ".dvc").mkdir()
    shutil.copy2(REPO / ".dvc" / "config", tmp_path / ".dvc" / "config")
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def imrestore_params(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("imrestore")), "params", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("override, message", [
    ("+modle.blocks=12", "error: params.yaml: unknown section modle; expected one of download, evaluate, model, "),
    ("model.blocks=abc", "error: params.yaml: model.blocks must be an integer ≥ 1, found 'abc'"),
    ("+split.sid.seed=1", "error: params.yaml: unknown key split.sid; expected one of gopro, sidd"),
])
def test_params_refuses_a_value_or_section_no_stage_would_take_before_writing(composing_repo, override, message):
    # `make repro` composes first: a bad value stops it here, not at train@ after download … patches have run.
    before = (composing_repo / "params.yaml").read_bytes()
    result = imrestore_params("-S", override, cwd=composing_repo)
    assert result.returncode == 1 and result.stderr.startswith(message) and "Traceback" not in result.stderr
    assert (composing_repo / "params.yaml").read_bytes() == before


def test_a_yaml_mistake_in_conf_is_named_with_its_file(composing_repo):
    with (composing_repo / "conf" / "config.yaml").open("a") as conf:
        conf.write("extra: [unclosed\n")
    result = imrestore_params(cwd=composing_repo)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot compose params.yaml: a file there is not valid YAML" in result.stderr
    assert "config.yaml" in result.stderr


@pytest.mark.parametrize("broken", [b"model:\n  blocks: [9\n", b"a: \xff\n", b""])
def test_a_broken_params_yaml_is_composed_afresh_and_check_says_why_it_fails(composing_repo, broken):
    # params.yaml is generated: an unreadable one is exactly what composing replaces.
    (composing_repo / "params.yaml").write_bytes(broken)
    checked = imrestore_params("--check", cwd=composing_repo)
    assert checked.returncode == 1 and "Traceback" not in checked.stderr and "params.yaml" in checked.stderr
    result = imrestore_params(cwd=composing_repo)
    assert result.returncode == 0 and "replacing a file that could not be read" in result.stdout
    assert (composing_repo / "params.yaml").read_bytes() == (REPO / "params.yaml").read_bytes()


def test_params_from_a_subfolder_says_to_run_from_the_repository_root(composing_repo):
    result = imrestore_params(cwd=composing_repo / "conf")
    assert result.returncode == 1 and "has no .dvc/: run from the repository root" in result.stderr
