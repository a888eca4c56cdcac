"""The real `dvc repro` on the embedded sample, in a temporary copy of the repository, on a tiny budget."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from commands import sh

REPO = Path(__file__).resolve().parents[1]
# Small enough for a few seconds per stage on 2 cores; same code paths as the defaults.
TINY_SAMPLE = {
    "gopro": {"train_sequences": 2, "test_sequences": 1, "frames_per_sequence": 3, "width": 160, "height": 96},
    "sidd": {"scenes": 4, "instances_per_scene": 2, "width": 64, "height": 64},
}
TINY_PATCHES = {"gopro": {"crop_size": 64, "step": 48}, "sidd": {"crop_size": 32, "step": 16}}
TINY_MODEL = {"blocks": 1, "features": 8}
TINY_TRAINING = {"max_steps": 4, "steps_per_epoch": 2, "crop": 32, "batch_size": 2, "num_workers": 0}
TINY_EVALUATE = {"tile": 64, "overlap": 16, "comparisons": 1,
                 "baselines": {"deblur": ["unsharp_mask"], "denoise": ["wavelet"]}}
METRIC_KEYS = ("psnr", "ssim", "psnr_y", "ssim_y", "ssim_3d")

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def copy_of_repo(dest: Path) -> Path:
    """The files git would commit (tracked + untracked, not ignored), in a fresh git repository."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    sh("git", "init", "-q", cwd=dest)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A", cwd=dest)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy", cwd=dest)
    return dest


def edit_conf(repo: Path, values: dict[str, object]) -> None:
    """Set dotted keys where users set them, in conf/ (`train.*` in the cpu preset), and compose params.yaml
    from it, so a later `dvc exp run` (which recomposes) keeps them."""
    for dotted, value in values.items():
        *parents, key = dotted.split(".")
        conf = repo / ("conf/train/cpu.yaml" if parents[:1] == ["train"] else "conf/config.yaml")
        parents = parents[1:] if parents[:1] == ["train"] else parents
        tree = yaml.safe_load(conf.read_text())
        section = tree
        for name in parents:
            section = section[name]
        section[key] = value
        conf.write_text(yaml.safe_dump(tree, sort_keys=False))
    sh("imrestore", "params", cwd=repo)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    repo = copy_of_repo(tmp_path_factory.mktemp("repo"))
    tiny = {}
    for dataset, sample in TINY_SAMPLE.items():
        tiny |= {f"download.{dataset}.sample.{key}": value for key, value in sample.items()}
        tiny |= {f"patches.{dataset}.{key}": value for key, value in TINY_PATCHES[dataset].items()}
    for name, values in (("model", TINY_MODEL), ("train", TINY_TRAINING), ("evaluate", TINY_EVALUATE)):
        tiny |= {f"{name}.{key}": value for key, value in values.items()}
    edit_conf(repo, tiny)
    sh("imrestore", "data", cwd=repo)
    ran = sh("dvc", "repro", cwd=repo)
    (repo.parent / "repro.out").write_text(ran.stdout + ran.stderr)  # for the tests that read what it printed
    return repo


def test_a_step_count_for_every_task_wins_over_the_presets_per_task_steps_and_says_so(pipeline):
    """The trained step count itself is checked with the curves (test_repro_trains_both_tasks_and_exports_weights: step 3 of 4)."""
    printed = (pipeline.parent / "repro.out").read_text()
    for task, steps in (("deblur", 600), ("denoise", 1000)):  # conf/train/cpu.yaml's per-task budget
        assert f"note: train.max_steps is 4, so train.per_task.{task}.max_steps ({steps}) is not used" in printed


def test_stage_outputs_respect_the_umask(pipeline):
    """Stages publish folders through a temporary sibling, which mkdtemp creates 0700; they must not stay so."""
    from imrestore.atomic import current_umask

    for folder in ("build/raw/gopro", "build/patches/sidd", "metrics/deblur", "models/denoise"):
        assert (pipeline / folder).stat().st_mode & 0o777 == 0o777 & ~current_umask(), folder


def test_repro_builds_layouts_manifests_and_reports(pipeline):
    gopro = pd.read_csv(pipeline / "build/manifest/gopro.csv")
    assert gopro.groupby("split").size().to_dict() == {"test": 3, "train": 6}
    assert gopro["input_path"].str.match(r"build/raw/gopro/GOPRO_Large/(train|test)/GOPR\d{4}_\d{2}_\d{2}/blur/\d{6}\.png").all()
    assert set(gopro["input_width"]) == {160}
    sidd = pd.read_csv(pipeline / "build/manifest/sidd.csv")
    assert len(sidd) == 8 and sidd["camera"].isin(["GP", "IP", "S6", "N6", "G4"]).all()
    for dataset in ("gopro", "sidd"):
        summary = json.loads((pipeline / f"reports/validation/{dataset}/summary.json").read_text())
        assert summary["valid"] and summary["problems"] == 0
        assert (pipeline / f"reports/validation/{dataset}/data_docs/index.html").is_file()


def test_repro_splits_without_leaks_and_builds_patch_caches(pipeline):
    from imrestore.data.manifest import read_manifest
    from imrestore.data.patches import PatchCache

    sidd = read_manifest(pipeline / "build/splits/sidd.csv")
    assert (sidd.groupby("group")["subset"].nunique() == 1).all(), "SIDD is grouped by scene"
    assert set(sidd["subset"]) == {"train", "val", "test"} and (sidd["subset"] == "test").sum() == 2
    gopro = read_manifest(pipeline / "build/splits/gopro.csv")
    assert (gopro["subset"] == "test").sum() == 3 and (gopro.loc[gopro["split"] == "train", "subset"] != "test").all()
    summary = json.loads((pipeline / "reports/splits/sidd.json").read_text())
    assert summary["pairs"]["train"] + summary["pairs"]["test"] + summary["pairs"]["val"] == 8
    for dataset, table in (("gopro", gopro), ("sidd", sidd)):
        cache = PatchCache(pipeline / "build/patches" / dataset, "train", verify="full")
        assert len(cache) > 0 and cache.inputs.shape == cache.targets.shape
        assert set(cache.index["pair_id"]) <= set(table.loc[table["subset"] == "train", "pair_id"])


def test_repro_trains_both_tasks_and_exports_weights(pipeline):
    from imrestore.models.weights import load_network

    for task in ("deblur", "denoise"):
        net = load_network(pipeline / "models" / task)  # weights_only=True
        assert net.config.blocks == 1 and (pipeline / "build/checkpoints" / task / "last.ckpt").is_file()
        metrics = json.loads((pipeline / "dvclive" / task / "metrics.json").read_text())
        assert metrics["step"] == 3 and 5 < metrics["val"]["psnr"] < 60
        curve = pd.read_csv(pipeline / "dvclive" / task / "plots/metrics/train/loss.tsv", sep="\t")
        assert curve["step"].tolist() == [0, 1, 2, 3]  # one point per step, the first at step 0


def test_repro_evaluates_both_tasks_into_metrics_plots_and_images(pipeline):
    for task, test_images in (("deblur", 3), ("denoise", 2)):
        metrics = json.loads((pipeline / "metrics" / f"{task}.json").read_text())
        assert metrics["n_images"] == test_images and metrics["data"] == "sample"
        for scope in (metrics, metrics["input"], *metrics["baselines"].values()):
            assert all(math.isfinite(scope[key]) for key in METRIC_KEYS)
            assert 10 < scope["psnr"] < 60 and 0 < scope["ssim"] <= 1
        assert set(metrics["baselines"]) == {"deblur": {"unsharp_mask"}, "denoise": {"wavelet"}}[task]
        assert metrics["model"]["blocks"] == 1 and metrics["inference"]["megapixels_per_s"] > 0
        table = pd.read_csv(pipeline / "metrics" / task / "per_image.csv")
        assert len(table) == test_images and table["psnr"].notna().all()
        assert len(list((pipeline / "metrics" / task / "comparisons").glob("*.png"))) == 1
    shown = json.loads(sh("dvc", "plots", "show", "--json", cwd=pipeline).stdout)["data"]
    assert "metrics/deblur/per_image.csv" in shown and any("comparisons" in name for name in shown)


def test_status_is_clean_and_a_second_repro_does_nothing(pipeline):
    status = sh("dvc", "status", "--json", cwd=pipeline)
    assert json.loads(status.stdout) == {}
    again = sh("dvc", "repro", cwd=pipeline)
    assert "didn't change, skipping" in again.stdout and "Running stage" not in again.stdout


def test_data_is_in_the_cache_and_restorable(pipeline):
    shutil.rmtree(pipeline / "data")
    sh("imrestore", "data", cwd=pipeline)
    assert json.loads(sh("dvc", "status", "--json", cwd=pipeline).stdout) == {}


def test_metrics_show_reads_the_validation_summary(pipeline):
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=pipeline).stdout)
    metrics = next(iter(shown.values()))["data"]
    assert metrics["reports/validation/gopro/summary.json"]["data"]["pairs"] == 9


def test_push_then_pull_restores_everything_without_running_stages(pipeline):
    sh("dvc", "push", cwd=pipeline)
    assert any((pipeline / ".dvc-storage").rglob("*")), "the default remote is the local .dvc-storage/"
    manifest = (pipeline / "build/manifest/gopro.csv").read_bytes()
    for produced in ("data", "build", ".dvc/cache"):
        shutil.rmtree(pipeline / produced)
    sh("dvc", "pull", cwd=pipeline)
    assert (pipeline / "build/manifest/gopro.csv").read_bytes() == manifest
    assert json.loads(sh("dvc", "status", "--json", cwd=pipeline).stdout) == {}


def test_an_experiment_runs_beside_the_baseline_and_the_report_shows_the_change(pipeline):
    sh("git", "add", "-A", cwd=pipeline)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline results", cwd=pipeline)
    sh("dvc", "exp", "run", "-S", "model.blocks=12", "--name", "blocks12", cwd=pipeline)
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=pipeline).stdout)
    experiments = {exp["name"]: exp for row in shown for exp in (row.get("experiments") or [])}
    run = experiments["blocks12"]["revs"][0]["data"]
    assert run["params"]["params.yaml"]["data"]["model"]["blocks"] == 12
    assert math.isfinite(run["metrics"]["metrics/denoise.json"]["data"]["psnr"])
    baseline = next(row for row in shown if row["rev"] != "workspace")["data"]
    assert baseline["params"]["params.yaml"]["data"]["model"]["blocks"] == 1

    sh("imrestore", "report", "--base", "HEAD", "--exp", "blocks12", "--out", "build/pr", cwd=pipeline)
    report = (pipeline / "build/pr/report.md").read_text()
    assert "model.blocks" in report and "metrics/deblur.json" in report
    ours = run["metrics"]["metrics/deblur.json"]["data"]["psnr"]
    assert f"{ours:.2f}" in report or f"{ours:.3f}" in report or f"{ours:.4f}" in report


def test_a_ddp_experiment_on_two_cpu_processes_runs_through_dvc(pipeline):
    """What a cluster user types, on 2 CPU cores: Lightning starts the second rank by re-running the stage."""
    sh("git", "add", "-A", cwd=pipeline)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "before ddp", "--allow-empty", cwd=pipeline)
    ran = sh("dvc", "exp", "run", "-S", "train.accelerator=cpu", "-S", "train.devices=2", "-S", "train.strategy=ddp",
             "--name", "ddp2", cwd=pipeline)
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in ran.stdout + ran.stderr
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=pipeline).stdout)
    experiments = {exp["name"]: exp for row in shown for exp in (row.get("experiments") or [])}
    run = experiments["ddp2"]["revs"][0]["data"]
    assert run["params"]["params.yaml"]["data"]["train"]["devices"] == 2
    for task in ("deblur", "denoise"):
        assert math.isfinite(run["metrics"][f"metrics/{task}.json"]["data"]["psnr"])
    sh("dvc", "exp", "apply", "ddp2", cwd=pipeline)  # the workspace now holds the DDP run's outputs
    assert sorted(p.name for p in (pipeline / "build/checkpoints/denoise").iterdir()) == ["last.ckpt", "run.json"]
    sh("git", "checkout", "-q", "--", ".", cwd=pipeline)  # back to the baseline for the tests that follow
    sh("dvc", "checkout", "-q", cwd=pipeline)


def test_nafnet_runs_as_an_experiment_and_the_report_and_table_name_it(pipeline):
    """`-S model.arch=nafnet`, at the smallest width; 4 levels, so the 16-pixel grid meets the 64/16 tiles."""
    sh("git", "add", "-A", cwd=pipeline)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "before nafnet", "--allow-empty",
       cwd=pipeline)
    sh("dvc", "exp", "run", "-S", "model.arch=nafnet", "-S", "model.nafnet.width=4", "--name", "naf", cwd=pipeline)
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=pipeline).stdout)
    run = {exp["name"]: exp for row in shown for exp in (row.get("experiments") or [])}["naf"]["revs"][0]["data"]
    for task in ("deblur", "denoise"):
        model = run["metrics"][f"metrics/{task}.json"]["data"]["model"]
        assert model["arch"] == "nafnet" and model["size"] == "width 4, blocks 1-1-1-1 / 1 / 1-1-1-1"
        assert math.isfinite(run["metrics"][f"metrics/{task}.json"]["data"]["psnr"])
    sh("imrestore", "report", "--base", "HEAD", "--exp", "naf", "--out", "build/pr-naf", cwd=pipeline)
    report = (pipeline / "build/pr-naf/report.md").read_text()
    assert re.search(r"- base: the paper's network \(\d+ blocks?, DCN kernel 3, [\d,]+ parameters\)", report)
    assert "- compared: NAFNet (width 4, blocks 1-1-1-1 / 1 / 1-1-1-1" in report
    table = sh("imrestore", "paper-table", "--out", "build/table.md", cwd=pipeline)
    assert "Other architectures and published checkpoints" in table.stdout
    assert "| NAFNet | width 4, blocks 1-1-1-1 / 1 / 1-1-1-1 |" in (pipeline / "build/table.md").read_text()


def test_a_published_checkpoint_in_data_is_evaluated_beside_the_trained_model(pipeline):
    """A release-layout file with random weights: `dvc add data`, and only evaluate@denoise runs again."""
    import torch

    from imrestore.models.nafnet import NAFNet, NAFNetConfig

    torch.manual_seed(0)
    torch.save({"params": NAFNet(NAFNetConfig(width=8, enc_blocks=(1, 1), dec_blocks=(1, 1))).state_dict()},
               pipeline / "data/checkpoints/denoise/NAFNet-random.pth")
    sh("dvc", "add", "data", cwd=pipeline)
    assert sorted(json.loads(sh("dvc", "status", "--json", cwd=pipeline).stdout)) == ["evaluate@denoise"]
    sh("dvc", "repro", "evaluate@denoise", cwd=pipeline)
    published = json.loads((pipeline / "metrics/denoise.json").read_text())["published"]["NAFNet-random"]
    assert published["model"]["arch"] == "nafnet" and published["model"]["enc_blocks"] == [1, 1]
    assert all(math.isfinite(published[key]) for key in METRIC_KEYS)
    (pipeline / "data/checkpoints/denoise/NAFNet-random.pth").unlink()  # back to the baseline for what follows
    sh("dvc", "add", "data", cwd=pipeline)
    sh("dvc", "repro", "evaluate@denoise", cwd=pipeline)


def test_the_sidd_benchmark_is_evaluated_once_its_files_are_in_data(pipeline):
    from mat_builders import write_sidd_validation

    write_sidd_validation(pipeline / "data" / "benchmarks" / "sidd", images=2, blocks=2, size=32)
    sh("dvc", "add", "data", cwd=pipeline)  # how real benchmark files enter the pipeline (README, "Real data")
    stale = json.loads(sh("dvc", "status", "--json", cwd=pipeline).stdout)
    assert sorted(stale) == ["evaluate@denoise"]  # SIDD's files are no reason to evaluate the deblurrer again
    sh("dvc", "repro", "evaluate@denoise", cwd=pipeline)
    benchmark = json.loads((pipeline / "metrics/denoise.json").read_text())["benchmarks"]["sidd_validation"]
    assert benchmark["n_images"] == 4 and all(math.isfinite(benchmark[key]) for key in METRIC_KEYS)


def test_a_changed_patch_size_rebuilds_the_cache_and_a_stale_cache_is_refused(pipeline):
    """DVC's run-cache drops params named `size` from its key; `crop_size` is seen (treeverse/dvc#10296)."""
    cache_json = pipeline / "build/patches/sidd/cache.json"
    original = TINY_PATCHES["sidd"]["crop_size"]
    edit_conf(pipeline, {})  # params.yaml as conf/ composes it (an earlier experiment may have left its own)
    status = json.loads(sh("dvc", "status", "--json", cwd=pipeline).stdout)
    edit_conf(pipeline, {"patches.sidd.crop_size": 24})
    rebuilt = sh("dvc", "repro", "patches@sidd", cwd=pipeline)
    assert "Running stage 'patches@sidd'" in rebuilt.stdout
    assert json.loads(cache_json.read_text())["size"] == 24

    edit_conf(pipeline, {"patches.sidd.crop_size": original})  # the run-cache gives back the original cache
    sh("dvc", "repro", "patches@sidd", cwd=pipeline)
    assert json.loads(cache_json.read_text())["size"] == original
    edit_conf(pipeline, {"patches.sidd.crop_size": 24})  # params changed behind DVC's back: training says so
    refused = sh("python", "stages/train.py", "denoise", cwd=pipeline, check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"records patches cut with crop_size {original} (params.yaml: 24)" in refused.stderr
    edit_conf(pipeline, {"patches.sidd.crop_size": original})
    assert json.loads(sh("dvc", "status", "--json", cwd=pipeline).stdout) == status, "as before the change"


def test_an_invalid_dataset_stops_the_pipeline_naming_the_file(pipeline, tmp_path):
    """Runs last: it points the SIDD source at a copy with a truncated image."""
    broken = tmp_path / "sidd_copy"
    shutil.copytree(pipeline / "build/raw/sidd", broken)
    victim = sorted(broken.glob("SIDD_Small_sRGB_Only/Data/*/NOISY_SRGB_010.PNG"))[1]
    victim.write_bytes(victim.read_bytes()[:200])
    edit_conf(pipeline, {"download.sidd.source": str(broken)})

    failed = sh("dvc", "repro", "validate@sidd", cwd=pipeline, check=False)
    assert failed.returncode != 0
    shown = victim.relative_to(broken).as_posix()
    assert f"build/raw/sidd/{shown}: input must be a readable, fully decodable image" in failed.stderr
    assert "validate@gopro may not have run yet; `dvc repro --keep-going` also runs" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert not (pipeline / "build/manifest/sidd.csv").exists()
    assert "validate@sidd" in json.loads(sh("dvc", "status", "--json", cwd=pipeline).stdout)
