"""benchmarks/generalisation.py --smoke against a tiny exported network: the JSON it writes, its numbers checked
against skimage, its images against the sample's own renderers, the photos against the sample, determinism."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import importlib.util
import io
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from rich.console import Console
from skimage.metrics import peak_signal_noise_ratio

from imrestore.acquire import degradations as deg
from imrestore.acquire import sample
from imrestore.data.manifest import load_rgb8
from imrestore.evaluation.metrics import METRIC_NAMES
from imrestore.params import load_params
from imrestore.training import RestorationModule, export_weights

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
TINY_MODEL = {"blocks": 1, "features": 8}
MISSING = "no_such_photo.png"


def load_benchmark():
    if str(REPO / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPO / "benchmarks"))  # the script imports its sibling `common`
    spec = importlib.util.spec_from_file_location("generalisation_benchmark", REPO / "benchmarks" / "generalisation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_benchmark()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A tiny random network per task. A fresh network's tail is zero (an identity); random tail weights make its
    output differ from its input, so the network's numbers are its own."""
    root = tmp_path_factory.mktemp("weights")
    for task in ("deblur", "denoise"):
        torch.manual_seed(0)
        module = RestorationModule(TINY_MODEL, {})
        with torch.no_grad():
            module.net.tail.weight.normal_(0.0, 0.05)
        export_weights(module, root / task, task)
    return root


def run(out: Path, weights: Path, *extra: str, params: Path = PARAMS) -> tuple[dict, str]:
    console = Console(file=io.StringIO(), width=200)
    threads = torch.get_num_threads()
    try:  # one thread: torch's parallel regions crawl on a CPU that other jobs share (imrestore.evaluation.metrics)
        results = bench.main(["--smoke", "--weights-root", str(weights), "--out", str(out), "--params", str(params),
                              "--device", "cpu", "--threads", "1", "--metrics-root", str(out / "no-metrics"), *extra],
                             console)
    finally:
        torch.set_num_threads(threads)
    return results, console.file.getvalue()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, weights) -> tuple[dict, dict, str]:
    """One smoke run of both tasks, with a photo that is not installed listed first (it must be skipped)."""
    out = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench, "UNSEEN_PHOTOS", {MISSING: (bench.SKIMAGE, "a photo no package ships"),
                                               **bench.UNSEEN_PHOTOS})
        results, printed = run(out, weights, "--save-images")
    written = json.loads((out / "generalisation.json").read_text())
    return results, written, printed


def finite_numbers(node, where="") -> list[tuple[str, float]]:
    if isinstance(node, dict):
        return [item for key, value in node.items() for item in finite_numbers(value, f"{where}.{key}")]
    if isinstance(node, list):
        return [item for i, value in enumerate(node) for item in finite_numbers(value, f"{where}[{i}]")]
    if isinstance(node, float):
        return [(where, node)]
    return []


def test_smoke_writes_every_field_with_finite_numbers(smoke):
    results, written, printed = smoke
    assert written == json.loads(json.dumps(results))  # the file is what main returned
    for key in ("benchmark", "seed", "smoke", "statement", "sample_photos", "photos", "excluded", "skipped", "params",
                "tasks", "timing", "machine"):
        assert key in written, key
    assert written["smoke"] is True and written["seed"] == 0
    assert set(written["tasks"]) == {"deblur", "denoise"}
    baselines = load_params(PARAMS)["evaluate"]["baselines"]
    for task, result in written["tasks"].items():
        assert len(result["rows"]) == 1, "smoke: one photo, one frame / crop per task"
        assert result["baselines"] == [name for name in baselines[task] if name != "identity"]
        row = result["rows"][0]
        for who in ("input", "network", *(row["baselines"][name] for name in result["baselines"])):
            metrics = row[who] if isinstance(who, str) else who
            assert set(metrics) == set(METRIC_NAMES)
        assert row["best_baseline"] in result["baselines"]
        assert row["gain_db"] == pytest.approx(row["network"]["psnr"] - row["input"]["psnr"])
        assert result["mean"]["n_images"] == 1 and result["mean"]["input"] == row["input"]
        assert set(result["per_photo"]) == {row["photo"]}
        assert result["weights"]["model"] == TINY_MODEL
        assert result["sample_test_reference"] is None  # not the pipeline's weights: nothing quoted
        assert f"{task}: sample-trained network" in printed
    numbers = finite_numbers(written["tasks"])
    assert len(numbers) > 50
    assert [where for where, value in numbers if not math.isfinite(value)] == []
    assert 0 < written["tasks"]["deblur"]["rows"][0]["input"]["ssim"] < 1


def test_psnr_matches_skimage_on_the_saved_images(smoke):
    _, written, _ = smoke
    for task, result in written["tasks"].items():
        row = result["rows"][0]
        degraded, restored, target = (load_rgb8(Path(row["files"][role])) for role in ("input", "restored", "target"))
        assert not np.array_equal(degraded, target), f"{task}: the input is not degraded"
        assert not np.array_equal(restored, degraded), f"{task}: the network did nothing"
        assert row["input"]["psnr"] == pytest.approx(peak_signal_noise_ratio(target, degraded, data_range=255),
                                                     abs=1e-9)
        assert row["network"]["psnr"] == pytest.approx(peak_signal_noise_ratio(target, restored, data_range=255),
                                                       abs=1e-9)


def test_the_images_are_the_samples_synthesis_with_the_pipelines_settings(smoke, tmp_path):
    _, written, _ = smoke
    params = load_params(PARAMS)["download"]
    gopro = sample.GoproSampleConfig.from_params(params["gopro"]["sample"], "gopro")
    sidd = sample.SiddSampleConfig.from_params(params["sidd"]["sample"], "sidd")
    assert written["params"]["gopro_sample"] == dataclasses.asdict(gopro)

    row = written["tasks"]["deblur"]["rows"][0]
    plan = sample.GoproSequencePlan(**{key: tuple(value) if isinstance(value, list) else value
                                       for key, value in row["conditions"]["plan"].items()})
    assert plan.photo == row["photo"] and gopro.min_subframes <= plan.subframes <= gopro.max_subframes
    assert 0.5 * gopro.shake_px <= plan.shake_px <= 1.5 * gopro.shake_px
    need = deg.required_photo_size(gopro.width, gopro.height, gopro.max_shift_px, gopro.max_rotation_deg)
    assert plan.photo_size[0] >= need[0] and plan.photo_size[1] >= need[1]
    for folder in sample.GOPRO_FOLDERS:
        (tmp_path / "gopro" / folder).mkdir(parents=True)
    path = Path(written["photos"][row["photo"]]["path"])
    sample.render_gopro_frame(str(path), plan, row["conditions"]["frame"], gopro, str(tmp_path / "gopro"))
    sample.clear_photo_caches()
    name = f"{plan.first_frame + row['conditions']['frame']:06d}.png"
    input_folder = load_params(PARAMS)["validate"]["gopro"]["input_folder"]
    saved = load_rgb8(Path(row["files"]["input"]))
    assert saved.shape == (gopro.height, gopro.width, 3)
    assert np.array_equal(saved, load_rgb8(tmp_path / "gopro" / input_folder / name))
    assert np.array_equal(load_rgb8(Path(row["files"]["target"])), load_rgb8(tmp_path / "gopro" / "sharp" / name))

    row = written["tasks"]["denoise"]["rows"][0]
    plan = sample.SiddInstancePlan(**{key: tuple(value) if isinstance(value, list) else value
                                      for key, value in row["conditions"]["plan"].items()})
    assert plan.camera in deg.CAMERAS and plan.iso in deg.SIDD_ISOS and plan.brightness in deg.BRIGHTNESS
    assert plan.temperature_k in deg.ILLUMINANTS_K
    assert (plan.box[2] - plan.box[0], plan.box[3] - plan.box[1]) == (sidd.width, sidd.height)
    (tmp_path / "sidd").mkdir()
    sample.render_sidd_instance(str(Path(written["photos"][plan.photo]["path"])), plan, str(tmp_path / "sidd"))
    sample.clear_photo_caches()
    assert np.array_equal(load_rgb8(Path(row["files"]["input"])), load_rgb8(tmp_path / "sidd" / sample.SIDD_NOISY_NAME))
    assert np.array_equal(load_rgb8(Path(row["files"]["target"])), load_rgb8(tmp_path / "sidd" / sample.SIDD_GT_NAME))


def test_the_photos_are_in_no_sample_and_a_missing_one_is_skipped(smoke, tmp_path):
    _, written, printed = smoke
    assert written["photos"] and not set(written["photos"]) & set(sample.SAMPLE_PHOTOS)
    assert written["sample_photos"] == list(sample.SAMPLE_PHOTOS)
    source = importlib.resources.files("skimage.data")
    sample_hashes = {hashlib.sha256((source / name).read_bytes()).hexdigest() for name in sample.SAMPLE_PHOTOS}
    for name, facts in written["photos"].items():
        assert hashlib.sha256(Path(facts["path"]).read_bytes()).hexdigest() == facts["sha256"]
        assert facts["sha256"] not in sample_hashes
        assert facts["origin"] and facts["credit"] and facts["tasks"] == ["deblur", "denoise"]
    assert "motorcycle_right.png" in written["excluded"] and "retina.jpg" in written["excluded"]
    assert MISSING in written["skipped"] and f"note: skipping {MISSING}" in printed

    with pytest.raises(ValueError, match="astronaut.png"):
        bench.check_unseen(["camera.png", "astronaut.png"])
    twin = tmp_path / "renamed.png"
    shutil.copyfile(source / "chelsea.png", twin)
    with pytest.raises(ValueError, match="chelsea.png"):
        bench.check_unseen([twin.name], {twin.name: twin})


def test_the_same_seed_gives_the_same_json_and_another_seed_other_images(smoke, weights, tmp_path):
    _, written, _ = smoke

    # The baselines are skimage's deterministic functions of the image: left out here to keep the test short.
    params = load_params(PARAMS)
    params["evaluate"]["baselines"]["denoise"] = []
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    def comparable(results: dict) -> dict:
        rows = [{key: value for key, value in row.items() if key not in ("files", "baselines", "best_baseline",
                                                                         "gain_over_best_baseline_db")}
                for row in results["tasks"]["denoise"]["rows"]]
        return {"rows": rows, "weights": results["tasks"]["denoise"]["weights"], "params": results["params"]}

    run(tmp_path / "again", weights, "--tasks", "denoise", params=tmp_path / "params.yaml")
    again = json.loads((tmp_path / "again" / "generalisation.json").read_text())
    assert comparable(again) == comparable(written)
    other, _ = run(tmp_path / "other", weights, "--tasks", "denoise", "--seed", "1", params=tmp_path / "params.yaml")
    assert other["seed"] == 1
    assert other["tasks"]["denoise"]["rows"][0]["conditions"] != written["tasks"]["denoise"]["rows"][0]["conditions"]
    assert other["tasks"]["denoise"]["rows"][0]["input"] != written["tasks"]["denoise"]["rows"][0]["input"]


def test_missing_weights_name_the_folder(tmp_path):
    with pytest.raises(SystemExit, match=r"empty/deblur/model\.pt is missing"):
        run(tmp_path / "out", tmp_path / "empty")
