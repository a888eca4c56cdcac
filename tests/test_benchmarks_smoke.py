"""The benchmarks that train: train_step_speed.py --smoke as run, and seed_noise.py / training_curve.py run for
real (subprocesses) against a tiny patch cache, split table and params file, so that the JSON the PR report
reads is checked field by field."""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from test_evaluation import TINY_MODEL, write_pairs
from test_training import noisy_cache

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

SEED_NOISE_TASK_KEYS = {"psnr", "ssim", "input_psnr", "gain_over_input", "gain_to_noise", "val_psnr",
                        "train_seconds"}
TINY_STEPS = 3


def run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    # One thread: these check what the scripts write, not speed, and on a busy machine two threads of tiny ops
    # spend most of their time waiting for each other (a 3-step tiny run: ~7 s with two, ~0.5 s with one).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(BENCHMARKS / name), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def test_train_step_speed_smoke_writes_its_json(tmp_path):
    done = run_script("train_step_speed.py", "--smoke", "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "train_step_speed.json").read_text())
    assert (results["benchmark"], results["batch"], results["crop"], results["steps"]) == ("train_step_speed", 1, 32, 2)
    from imrestore.models.network import ModelConfig, RestorationNet, count_parameters

    assert results["networks"]["paper"]["parameters"] == count_parameters(RestorationNet(ModelConfig()))
    from imrestore.models.nafnet import NAFNet, NAFNetConfig

    assert results["networks"]["reference"]["parameters"] == count_parameters(NAFNet(NAFNetConfig()))
    for row in results["networks"].values():
        assert len(row["step_seconds"]) == 2 and all(s > 0 for s in row["step_seconds"])
        assert row["median_step_s"] == pytest.approx(statistics.median(row["step_seconds"]))
        assert row["steps_per_s"] == pytest.approx(1 / row["median_step_s"])
    ratio = results["networks"]["paper"]["median_step_s"] / results["networks"]["reference"]["median_step_s"]
    assert results["ratio_paper_over_reference"] == pytest.approx({"step_time": ratio, "steps_per_s": 1 / ratio})
    assert results["machine"]["cpus"] >= 1


def fake_run(psnr: float, ssim: float, input_psnr: float = 25.0) -> dict:
    return {"psnr": psnr, "ssim": ssim, "input": {"psnr": input_psnr, "ssim": 0.5}}


def test_seed_noise_statistics_are_sample_statistics():
    from seed_noise import task_summary

    row = task_summary([fake_run(30.0, 0.80), fake_run(31.0, 0.82), fake_run(32.0, 0.84)], [1.0, 2.0, 3.0],
                       [33.0, 34.0, 35.0])
    assert set(row) == SEED_NOISE_TASK_KEYS
    assert row["val_psnr"] == {"values": [33.0, 34.0, 35.0], "mean": 34.0, "std": 1.0}
    assert row["psnr"] == {"values": [30.0, 31.0, 32.0], "mean": 31.0, "std": 1.0}  # ddof = 1 (ddof 0: 0.816)
    assert row["ssim"]["std"] == pytest.approx(0.02)
    assert (row["input_psnr"], row["gain_over_input"], row["gain_to_noise"]) == (25.0, 6.0, 6.0)
    assert row["train_seconds"] == [1.0, 2.0, 3.0]
    flat = task_summary([fake_run(30.0, 0.8)] * 2, [1.0, 1.0], [None, 30.0])
    assert flat["gain_to_noise"] is None and flat["val_psnr"] is None  # no spread: no ratio; a run without val
    with pytest.raises(ValueError, match="at least 2 seeds"):
        task_summary([fake_run(30.0, 0.8)], [1.0], [None])
    with pytest.raises(ValueError, match="input PSNR differs"):
        task_summary([fake_run(30.0, 0.8), fake_run(30.0, 0.8, input_psnr=26.0)], [1.0, 1.0], [None, None])


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory) -> dict[str, Path]:
    """A build folder (patches/sidd, splits/sidd.csv), params.yaml and metrics/denoise.json, all tiny."""
    root = tmp_path_factory.mktemp("tiny-pipeline")
    build = root / "build"
    noisy_cache(build / "patches" / "sidd")
    (build / "splits").mkdir(parents=True)
    shutil.copy(write_pairs(root / "pairs", count=2), build / "splits" / "sidd.csv")
    params = {
        "download": {"sidd": {"source": "sample"}, "gopro": {"source": "sample"}},
        "model": TINY_MODEL,
        "train": {"seed": 0, "max_steps": TINY_STEPS, "steps_per_epoch": 2, "crop": 16, "batch_size": 2,
                  "num_workers": 0, "optim": {"lr": 1e-2}},
        "evaluate": {"tile": 64, "overlap": 16, "tile_batch": 2, "device": "cpu", "comparisons": 1,
                     "baselines": {"denoise": ["wavelet"]}},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "metrics").mkdir()
    (root / "metrics" / "denoise.json").write_text(json.dumps(
        {"n_images": 2, "baselines": {"wavelet": {"psnr": 20.5}, "nl_means": {"psnr": 22.25}, "tv": {"psnr": 21.0}}}))
    common = ["--params", str(root / "params.yaml"), "--build", str(build)]
    seed_noise = run_script("seed_noise.py", *common, "--tasks", "denoise", "--seeds", "0", "1", "2",
                            "--set", "train.optim.warmup_steps=0", "--out", str(root / "seed-noise"), cwd=root)
    assert seed_noise.returncode == 0, seed_noise.stderr
    curve = run_script("training_curve.py", *common, "--task", "denoise", "--every-seconds", "0",
                       "--metrics", str(root / "metrics"), "--out", str(root / "curve"), cwd=root)
    assert curve.returncode == 0, curve.stderr
    return {"seed_noise": root / "seed-noise" / "seed_noise.json", "curve": root / "curve",
            "curve_stdout": curve.stdout, "root": root, "common": common}


def test_seed_noise_writes_the_report_format_from_real_runs(tiny_pipeline):
    results = json.loads(tiny_pipeline["seed_noise"].read_text())
    assert set(results) == {"seeds", "data", "params", "tasks", "machine"}
    assert (results["seeds"], results["data"], list(results["tasks"])) == ([0, 1, 2], "sample", ["denoise"])
    assert results["params"]["model"] == TINY_MODEL
    assert results["params"]["train"]["max_steps"] == TINY_STEPS and "seed" not in results["params"]["train"]
    # --set reached the params every seed runs with (0 is the default: the runs stay comparable with the curve's)
    assert results["params"]["train"]["optim"] == {"lr": 1e-2, "warmup_steps": 0}
    row = results["tasks"]["denoise"]
    assert set(row) == SEED_NOISE_TASK_KEYS
    values = row["psnr"]["values"]
    assert len(values) == 3 and len(set(values)) == 3  # the seed reaches training: three different networks
    assert row["psnr"]["mean"] == pytest.approx(statistics.mean(values))
    assert row["psnr"]["std"] == pytest.approx(statistics.stdev(values))
    assert row["ssim"]["std"] == pytest.approx(statistics.stdev(row["ssim"]["values"]))
    assert len(row["val_psnr"]["values"]) == 3  # the tiny cache has a val subset, validated every 2 steps
    assert row["gain_over_input"] == pytest.approx(row["psnr"]["mean"] - row["input_psnr"])
    assert row["gain_to_noise"] == pytest.approx(row["gain_over_input"] / row["psnr"]["std"])
    assert len(row["train_seconds"]) == 3 and all(s > 0 for s in row["train_seconds"])
    assert 10 < row["input_psnr"] < 40  # the noisy pairs (sigma 20) against their clean images


def test_training_curve_points_are_the_pipelines_own_evaluation(tiny_pipeline):
    results = json.loads((tiny_pipeline["curve"] / "training_curve_denoise.json").read_text())
    points = results["points"]
    assert [p["step"] for p in points] == list(range(TINY_STEPS + 1))  # every step with --every-seconds 0
    seconds = [p["training_seconds"] for p in points]
    assert seconds[0] == 0 and seconds == sorted(seconds) and seconds[-1] > 0
    assert (results["task"], results["n_images"], results["data"]) == ("denoise", 2, "sample")
    assert results["best_baseline"]["name"] == "nl_means" and results["best_baseline"]["psnr"] == 22.25
    # the final point is seed 0 after the same steps, scored as evaluate scores the exported weights
    seed_noise = json.loads(tiny_pipeline["seed_noise"].read_text())["tasks"]["denoise"]
    assert points[-1]["test_psnr"] == pytest.approx(seed_noise["psnr"]["values"][0], abs=1e-9)
    assert results["input_psnr"] == pytest.approx(seed_noise["input_psnr"], abs=1e-9)
    assert "test split only to draw the curve, never to choose settings" in results["note"]
    assert "never to choose settings" in " ".join(tiny_pipeline["curve_stdout"].split())
    assert (tiny_pipeline["curve"] / "training_curve_denoise.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dcn_offset_lr_records_each_scale_against_the_kernel_3_reference(tiny_pipeline):
    out = tiny_pipeline["root"] / "dcn-offset-lr"
    done = run_script("dcn_offset_lr.py", *tiny_pipeline["common"], "--smoke", "--blocks", "1", "--scales", "1", "0",
                      "--out", str(out), cwd=tiny_pipeline["root"])
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "dcn_offset_lr.json").read_text())
    assert list(results["variants"]) == ["k4 scale 1", "k4 scale 0", "k3 scale 1"]
    assert (results["reference"], results["blocks"], results["max_steps"]) == ("k3 scale 1", 1, 2)
    assert "never reads the test split" in results["note"]
    for name, row in results["variants"].items():
        assert [p["step"] for p in row["points"]] == [1, 2]  # --smoke validates every step
        assert all(math.isfinite(p["val_psnr"]) and p["grad_norm"] > 0 for p in row["points"])
    frozen = results["variants"]["k4 scale 0"]["points"]
    assert all(p["rms_offset_px"] == 0 for p in frozen)  # lr 0: the zero-initialised grid stays regular
    # the tail starts at zero, so no gradient reaches any offset in step 1; from step 2 they move
    assert [p["rms_offset_px"] > 0 for p in results["variants"]["k4 scale 1"]["points"]] == [False, True]
    assert all(p["grad_norm_vs_reference"] == 1 for p in results["variants"]["k3 scale 1"]["points"])


@pytest.mark.parametrize(("script", "task"), [("seed_noise", "--tasks"), ("training_curve", "--task")])
def test_missing_pipeline_inputs_name_the_path_and_make_repro(tmp_path, script, task):
    main = __import__(script).main  # in this process: it must stop before anything is trained or written
    missing = tmp_path / "empty" / "patches" / "sidd" / "cache.json"
    with pytest.raises(SystemExit, match="run `make repro` first") as stopped:
        main(["--build", str(tmp_path / "empty"), task, "denoise", "--smoke", "--out", str(tmp_path / "out")])
    assert str(missing) in str(stopped.value)
    assert not any(tmp_path.iterdir())  # no results folder, nothing trained


def _deblur_split(root: Path) -> Path:
    """Two train, one val and two test pairs of a random pattern and its copy smeared by a horizontal [1 2 1]/4."""
    rng = np.random.default_rng(0)
    rows = []
    for index, subset in enumerate(("train", "train", "val", "test", "test")):
        sharp = (rng.random((40, 48, 3)) > 0.5).astype(np.float64)
        blurred = 0.25 * np.roll(sharp, -1, axis=1) + 0.5 * sharp + 0.25 * np.roll(sharp, 1, axis=1)
        paths = {}
        for role, image in (("input", blurred), ("target", sharp)):
            paths[role] = root / subset / f"{index}_{role}.png"
            paths[role].parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.rint(image * 255).astype(np.uint8)).save(paths[role])
        rows.append({"subset": subset, "sequence": f"{subset}_{index}", "input_path": str(paths["input"]),
                     "target_path": str(paths["target"])})
    pd.DataFrame(rows).to_csv(root / "split.csv", index=False)
    return root / "split.csv"


def test_deblur_headroom_smoke_fits_the_filters_it_reports(tmp_path):
    split = _deblur_split(tmp_path)
    done = run_script("deblur_headroom.py", "--smoke", "--split", str(split), "--json", str(tmp_path / "h.json"),
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "h.json").read_text())
    assert results["kernel"] == 5 and len(results["frames"]) == 2
    mean = results["mean"]
    # One smear for every frame: a single filter undoes it as well as each frame's own does, and both gain.
    assert mean["one_filter"] > mean["input"] + 2 and mean["own_filter"] > mean["input"] + 2


def test_deblur_headroom_trains_on_both_contents_per_seed_and_reports_the_spread(tmp_path):
    from imrestore.acquire import sample

    split = _deblur_split(tmp_path)
    sample.materialise_photos(tmp_path / "data")  # the script reads data/sample_photos, as in the repository
    done = run_script("deblur_headroom.py", "--smoke", "--split", str(split), "--json", str(tmp_path / "h.json"),
                      "--train-steps", "1", "--seeds", "0", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "h.json").read_text())
    assert results["seeds"] == [0, 1] and set(results["trained"]) == {"photos", "dead_leaves"}
    for content, row in results["trained"].items():
        assert len(row["per_seed"]["val"]) == len(row["per_seed"]["test"]) == 2
        assert row["test"] == pytest.approx(statistics.mean(row["per_seed"]["test"]))
        assert row["val_std"] == pytest.approx(statistics.stdev(row["per_seed"]["val"]))
        assert results["mean"][f"network_{content}"] == row["test"]
        assert all(f"network_{content}" in frame for frame in results["frames"])


def test_deblur_headroom_draws_a_val_curve_for_the_network_and_content_named(tmp_path):
    from imrestore.acquire import sample

    split = _deblur_split(tmp_path)
    sample.materialise_photos(tmp_path / "data")
    done = run_script("deblur_headroom.py", "--smoke", "--split", str(split), "--json", str(tmp_path / "h.json"),
                      "--train-steps", "3", "--eval-every", "2", "--arch", "nafnet", "--contents", "photos", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "h.json").read_text())
    assert results["arch"] == "nafnet" and set(results["trained"]) == {"photos"}
    row = results["trained"]["photos"]
    (curve,) = row["val_curves"]  # one seed
    assert [point["step"] for point in curve] == [2, 3]
    assert curve[-1]["val"] == row["per_seed"]["val"][0]
    assert 0 < curve[0]["train_seconds"] <= curve[-1]["train_seconds"] == row["per_seed"]["train_seconds"][0]


def test_train_on_the_fly_measures_in_eval_mode_and_trains_on_after():
    from deblur_headroom import train_on_the_fly

    seen, modes_after = [], []

    def on_eval(step, net):
        seen.append((step, net.training))
        if step == 2:  # from here on, record the mode of every training forward
            net.register_forward_pre_hook(lambda module, args: modes_after.append(module.training))

    photo = np.random.default_rng(1).random((200, 220, 3)).astype(np.float32)
    net = train_on_the_fly(5, [photo], seed=0, arch="nafnet", eval_every=2, on_eval=on_eval)
    assert seen == [(2, False), (4, False)] and not net.training
    assert modes_after == [True, True, True]  # steps 3, 4 and 5 trained in train mode
    assert type(net).__name__ == "NAFNet"


def test_deblur_headroom_leaves_the_val_sequences_photographs_out_of_training(tmp_path):
    from deblur_headroom import training_content

    from imrestore.acquire import sample

    photos_dir = sample.materialise_photos(tmp_path / "data")[0].parent
    plans = [p for p in sample.plan_gopro_sample(sample.photo_sizes(photos_dir), sample.GoproSampleConfig())
             if p.split == "train"]
    every = training_content(photos_dir, contents=("photos",))["photos"]
    held = training_content(photos_dir, contents=("photos",), held_out=frozenset({plans[0].name}))["photos"]
    assert len(every) == len({p.photo for p in plans}) and len(held) == len(every) - 1
    left_out = np.asarray(Image.open(photos_dir / plans[0].photo).convert("RGB"), dtype=np.float32) / 255
    assert any(np.array_equal(left_out, photo) for photo in every)
    assert not any(photo.shape == left_out.shape and np.array_equal(left_out, photo) for photo in held)


def test_dead_leaves_cover_the_image_with_palette_discs_of_every_scale():
    from deblur_headroom import dead_leaves

    palette = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=np.float32)
    image = dead_leaves(np.random.default_rng(3), 96, palette)
    assert image.shape == (96, 96, 3) and image.dtype == np.float32
    assert np.array_equal(image, dead_leaves(np.random.default_rng(3), 96, palette))
    # Anti-aliased edges aside, pixels are palette colours (all three appear), so every pixel was covered.
    distance = np.abs(image[:, :, None, :] - palette[None, None]).max(axis=-1).min(axis=-1)
    assert (distance < 0.02).mean() > 0.5
    assert all((np.abs(image - colour).max(axis=-1) < 0.02).any() for colour in palette)
    # Scale invariance: edges at fine scale and flat regions at coarse scale both occur.
    edges = np.abs(np.diff(image, axis=1)).max(axis=-1) > 0.2
    assert 0.02 < edges.mean() < 0.5


def test_deblur_headroom_trains_on_blur_made_afresh():
    from deblur_headroom import train_on_the_fly

    photo = (np.random.default_rng(1).random((200, 220, 3))).astype(np.float32)
    net = train_on_the_fly(2, [photo], seed=0)
    assert not net.training
    with torch.no_grad():
        assert torch.isfinite(net(torch.rand(1, 3, 32, 32))).all()


def _sample_split_with_val(root: Path) -> Path:
    """The sample's photographs under root/data and a split table naming its first train sequence as val."""
    from imrestore.acquire import sample

    photos_dir = sample.materialise_photos(root / "data")[0].parent
    plans = [p for p in sample.plan_gopro_sample(sample.photo_sizes(photos_dir), sample.GoproSampleConfig())
             if p.split == "train"]
    rows = [{"subset": "val" if index == 0 else "train", "sequence": plan.name} for index, plan in enumerate(plans)]
    pd.DataFrame(rows).to_csv(root / "split.csv", index=False)
    return root / "split.csv"


def test_deblur_synthesis_calibrates_every_setting_to_the_input_psnr_and_reports_each_seed(tmp_path):
    split = _sample_split_with_val(tmp_path)
    done = run_script("deblur_synthesis.py", "--smoke", "--split", str(split), "--json", str(tmp_path / "s.json"),
                      "--scales", "0.8", "--shakes", "tremor", "smooth", "--input-psnr", "30", "--seeds", "0", "1",
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "s.json").read_text())
    assert [(row["scale"], row["shake"]) for row in results["settings"]] == [(0.8, "tremor"), (0.8, "smooth")]
    for row in results["settings"]:
        # A faster shake needs a wider margin, which moves the crops a little: with 4 crops the input PSNR jumps
        # by up to a few tenths of a dB there, so bisection lands that close (with the default 48, to 1e-3 dB).
        assert row["input_psnr"] == pytest.approx(30, abs=0.3) and row["speed_px"] > 0
        assert [[point["step"] for point in row["curves"][seed]] for seed in ("0", "1")] == [[2, 3], [2, 3]]
        finals = [row["curves"][seed][-1]["gain"] for seed in ("0", "1")]
        assert row["final_gain"] == pytest.approx(statistics.mean(finals))
        assert row["final_gain_std"] == pytest.approx(statistics.stdev(finals))


def test_deblur_synthesis_blurs_as_the_sample_renders_and_smooth_shake_keeps_the_target_at_the_centroid(tmp_path):
    from deblur_synthesis import blurred_crop, path_kernel, unit_path

    from imrestore.acquire import degradations as deg
    from imrestore.acquire import sample

    rng = np.random.default_rng(0)
    photos_dir = sample.materialise_photos(tmp_path / "data")[0].parent
    photo = np.asarray(Image.open(photos_dir / "coffee.png").convert("RGB"), dtype=np.float32) / 255
    path = 1.2 * unit_path(rng, "tremor")
    kernel, x0, y0 = path_kernel(path)
    rows, cols = np.mgrid[0 : kernel.shape[0], 0 : kernel.shape[1]]
    assert kernel.sum() == pytest.approx(1)
    assert ((cols * kernel).sum() + x0, (rows * kernel).sum() + y0) == pytest.approx(tuple(path.mean(axis=0)))
    # One convolution equals the sample's way (a bicubic view per sub-frame, each rounded to uint8, averaged) to
    # within a level or two: about 50 dB PSNR.
    blurred, sharp = blurred_crop(photo, 60, 70, 48, path)
    views = [deg.to_uint8(deg.render_view(photo, 70 + 23.5 + dx, 60 + 23.5 + dy, 0.0, 48, 48)) for dx, dy in path]
    rendered_sharp, rendered_blurred, _ = deg.gopro_triplet(views)
    assert np.array_equal(sharp, rendered_sharp)
    difference = blurred.astype(int) - rendered_blurred
    assert np.abs(difference).max() <= 3 and 10 * np.log10(255**2 / np.mean(difference**2)) > 45
    with pytest.raises(ValueError, match="reads outside the photograph"):
        blurred_crop(photo, 0, 0, 48, path + 5 * np.sign(path.min(axis=0)) - 5)
    # What the smooth shake is for: straighter paths whose middle sub-frame lies near the blur's centroid.
    stats = {}
    for shake in ("tremor", "smooth"):
        paths = [unit_path(rng, shake) for _ in range(400)]
        offset = np.mean([np.hypot(*p.mean(axis=0)) for p in paths])  # the middle sub-frame is at 0
        length = np.mean([np.linalg.norm(np.diff(p, axis=0), axis=1).sum() for p in paths])
        straightness = np.mean([np.hypot(*(p[-1] - p[0])) / np.linalg.norm(np.diff(p, axis=0), axis=1).sum()
                                for p in paths])
        stats[shake] = offset / length, straightness
    assert stats["smooth"][0] < 0.5 * stats["tremor"][0]
    assert stats["smooth"][1] > stats["tremor"][1]


def test_the_gpu_suite_runs_every_section_at_toy_sizes_on_the_cpu(tmp_path):
    """The prepared GPU command must not rot between the sessions that have a GPU: --smoke runs all of it."""
    done = run_script("gpu_suite.py", "--smoke", "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert results["smoke"] and set(results["seconds"]) == {"dcn", "train_step", "inference", "metrics", "loader",
                                                            "curve", "total"}
    assert set(results["dcn"]["fastest_backend"]) == {"fp32", "bf16"}
    # The backends agree to float rounding in fp32; under bf16 autocast grid_sample computes in bf16 while
    # torchvision's kernel runs in fp32, measured 3-4e-2 apart relative to the largest output.
    tolerance = {"fp32": 1e-5, "bf16": 0.1}
    assert all(0 < row["max_rel_output"] < tolerance[row["dtype"]] for row in results["dcn"]["rows"])
    variants = {(row["crop"], row["batch"], row["variant"]) for row in results["train_step"]["rows"]}
    assert {(32, 2, "eager"), (32, 2, "channels_last"), (32, 2, "compiled"), (16, 1, "eager")} <= variants
    assert all(row["flops_per_step"] > 0 and 0 < row["mfu"] for row in results["train_step"]["rows"])
    assert results["inference"]["rows"][0]["speedup_over_fp32_untiled"] == 1.0
    assert results["metrics"]["max_abs_psnr"] < 1e-6 and results["metrics"]["max_abs_ssim"] < 1e-3
    assert len(results["loader"]["rows"]) == 4 and len(results["curve"]["points"]) >= 2
    assert all(math.isfinite(p["test_psnr"]) for p in results["curve"]["points"])
    table = (tmp_path / "gpu_suite.md").read_text()
    assert "## Training step (bf16 autocast)" in table and "FASTEST_BACKEND['cuda'] per dtype" in table


def test_onnx_speed_smoke_writes_its_json(tmp_path):
    done = run_script("onnx_speed.py", "--smoke", "--archs", "nafnet", "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "onnx_speed.json").read_text())
    assert (results["benchmark"], results["frame"], results["repeats"]) == ("onnx_speed", [64, 64], 1)
    row = results["archs"]["nafnet"]
    assert len(row["torch_s"]) == len(row["onnxruntime_s"]) == 1 and row["export_s"] > 0
    assert row["ratio_torch_over_onnxruntime"] == pytest.approx(row["median_torch_s"] / row["median_onnxruntime_s"])
    assert row["max_abs_difference"] < 1e-5 and row["weights"] == "fresh (smoke)"
