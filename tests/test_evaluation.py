"""The evaluate stage's library: real PNG pairs, a real exported network, the metrics JSON, the per-image table,
the comparison images, the baselines and the SIDD validation benchmark."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio

from imrestore.errors import ImrestoreError
from imrestore.evaluation.evaluate import EvaluateSettings, evaluate, select_test_pairs, worst_crop
from imrestore.training import RestorationModule, export_weights
from mat_builders import write_sidd_validation

TINY_MODEL = {"blocks": 1, "features": 8}
SIZE = (72, 96)  # H, W: not a multiple of the 64-pixel tiles below, so tiling and padding are exercised


def write_pairs(root: Path, count: int, seed: int = 0) -> Path:
    """Noisy/clean PNG pairs cut from scikit-image photographs, and a split table naming them (plus one train
    pair that evaluation must ignore)."""
    rng = np.random.default_rng(seed)
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea()]
    rows = []
    for i in range(count + 1):
        photo = photos[i % len(photos)]
        y, x = 40 * i % (photo.shape[0] - SIZE[0]), 60 * i % (photo.shape[1] - SIZE[1])
        clean = photo[y:y + SIZE[0], x:x + SIZE[1]]
        noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).round().astype(np.uint8)
        pair_id = f"scene{i:02d}"
        paths = {role: root / role / f"{pair_id}.png" for role in ("input", "target")}
        for role, image in (("input", noisy), ("target", clean)):
            paths[role].parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(paths[role])
        rows.append({"pair_id": pair_id, "input_path": str(paths["input"]), "target_path": str(paths["target"]),
                     "subset": "train" if i == count else "test"})
    split = root / "split.csv"
    pd.DataFrame(rows).to_csv(split, index=False)
    return split


def export_network(folder: Path, identity: bool = False, task: str = "denoise") -> Path:
    torch.manual_seed(0)
    module = RestorationModule(TINY_MODEL, {})
    if identity:  # the global residual makes a zero tail an exact identity: output = input
        with torch.no_grad():
            for parameter in module.net.tail.parameters():
                parameter.zero_()
    export_weights(module, folder, task)
    return folder


def params_for(tmp_path: Path, **evaluate_overrides) -> dict:
    evaluate_section = {"tile": 64, "overlap": 16, "tile_batch": 2, "device": "cpu", "comparisons": 2,
                        "benchmarks": str(tmp_path / "benchmarks"), "published": str(tmp_path / "checkpoints"),
                        "baselines": {"denoise": ["identity", "wavelet"], "deblur": ["unsharp_mask"]}}
    evaluate_section.update(evaluate_overrides)
    return {"evaluate": evaluate_section, "download": {"sidd": {"source": "sample"}, "gopro": {"source": "x.zip"}}}


def run(tmp_path: Path, params: dict, weights: Path, split: Path, task: str = "denoise") -> dict:
    return evaluate(EvaluateSettings.for_task(params, task), weights_dir=weights, split_csv=split,
                    metrics_json=tmp_path / "out" / f"{task}.json", report_dir=tmp_path / "out" / task, progress=False)


def test_evaluation_writes_metrics_table_comparisons_and_benchmark(tmp_path):
    split = write_pairs(tmp_path / "pairs", count=4)
    write_sidd_validation(tmp_path / "benchmarks" / "sidd", images=2, blocks=3, size=32)
    weights = export_network(tmp_path / "model")
    metrics = run(tmp_path, params_for(tmp_path), weights, split)

    written = json.loads((tmp_path / "out" / "denoise.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    assert written["n_images"] == 4 and written["data"] == "sample" and written["dataset"] == "sidd"
    for scope in (written, written["input"], written["baselines"]["wavelet"],
                  written["benchmarks"]["sidd_validation"], written["benchmarks"]["sidd_validation"]["input"]):
        assert set(scope) >= {"psnr", "ssim", "psnr_y", "ssim_y", "ssim_3d"}
        assert all(math.isfinite(scope[key]) for key in ("psnr", "ssim", "psnr_y", "ssim_y", "ssim_3d"))
        assert 5 < scope["psnr"] < 60 and -1 < scope["ssim"] <= 1
    assert "identity" not in written["baselines"]  # the identity is the `input` entry
    assert written["benchmarks"]["sidd_validation"]["n_images"] == 6
    assert written["model"]["parameters"] > 0 and written["model"]["blocks"] == 1
    assert written["inference"]["megapixels_per_s"] > 0 and written["inference"]["device"].startswith("cpu")
    # A denoiser must beat σ=20 noise by a clear margin; this checks the baseline really ran on these images.
    assert written["baselines"]["wavelet"]["psnr"] > written["input"]["psnr"] + 2

    # The input's numbers are the plain PSNR of each noisy/clean pair: check against scikit-image directly.
    table = pd.read_csv(tmp_path / "out" / "denoise" / "per_image.csv")
    assert list(table.columns[:4]) == ["name", "psnr", "ssim", "input_psnr"]
    pairs = select_test_pairs(split)
    expected = [peak_signal_noise_ratio(np.asarray(Image.open(t)), np.asarray(Image.open(i)), data_range=255)
                for i, t in zip(pairs.input_path, pairs.target_path)]
    assert table["name"].tolist() == pairs.pair_id.tolist()
    np.testing.assert_allclose(table["input_psnr"], expected, atol=1e-5)
    assert written["input"]["psnr"] == pytest.approx(np.mean(expected), abs=1e-5)

    comparisons = sorted((tmp_path / "out" / "denoise" / "comparisons").glob("*.png"))
    assert len(comparisons) == 2
    with Image.open(comparisons[0]) as image:
        assert image.width == 3 * SIZE[1]  # three panels at native width (below the downscale limit)


def test_an_identity_network_scores_exactly_the_input(tmp_path):
    split = write_pairs(tmp_path / "pairs", count=3)
    metrics = run(tmp_path, params_for(tmp_path, baselines={}), export_network(tmp_path / "m", identity=True), split)
    for key in ("psnr", "ssim", "psnr_y", "ssim_y", "ssim_3d"):
        assert metrics[key] == pytest.approx(metrics["input"][key], abs=1e-12)
    assert metrics["benchmarks"] == {}  # no .mat files: nothing claimed


def test_an_image_identical_to_its_target_is_counted_not_averaged_as_an_infinite_psnr(tmp_path):
    # One infinite PSNR made the mean inf, which json writes as `Infinity`: no JSON parser but Python's reads it.
    split = write_pairs(tmp_path / "pairs", count=3)
    pairs = select_test_pairs(split)
    shutil.copyfile(pairs.target_path.iloc[1], pairs.input_path.iloc[1])
    metrics = run(tmp_path, params_for(tmp_path, baselines={}), export_network(tmp_path / "m"), split)

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    written = json.loads((tmp_path / "out" / "denoise.json").read_text(), parse_constant=refuse)
    table = pd.read_csv(tmp_path / "out" / "denoise" / "per_image.csv")
    assert math.isinf(table["input_psnr"].iloc[1]) and written["input"]["identical_images"] == 1
    others = table["input_psnr"].drop(index=1)
    assert written["input"]["psnr"] == pytest.approx(others.mean(), abs=1e-5)  # the CSV rounds
    restored_identical = int(np.isinf(table["psnr"]).sum())  # the untrained network may return it unchanged too
    assert written.get("identical_images", 0) == restored_identical and math.isfinite(metrics["psnr"])


def test_published_checkpoints_are_scored_by_the_same_code_on_the_same_images(tmp_path):
    """A NAFNet release file ({"params": …}) and a Lightning checkpoint of the paper's network, random weights."""
    from imrestore.models.nafnet import NAFNet, NAFNetConfig

    split = write_pairs(tmp_path / "pairs", count=3)
    write_sidd_validation(tmp_path / "benchmarks" / "sidd", images=1, blocks=2, size=32)
    folder = tmp_path / "checkpoints" / "denoise"
    folder.mkdir(parents=True)
    (folder / "README.md").write_text("notes, not weights")
    nafnet = NAFNet(NAFNetConfig(width=4))
    with torch.no_grad():  # a zero ending makes NAFNet the identity through its global residual
        nafnet.ending.weight.zero_()
        nafnet.ending.bias.zero_()
    torch.save({"params": nafnet.state_dict()}, folder / "NAFNet-identity.pth")
    torch.manual_seed(1)
    paper = RestorationModule({"blocks": 2, "features": 8, "dcn_kernel": 4}, {})
    with torch.no_grad():
        paper.net.tail.weight.normal_(std=0.01)
    torch.save({"state_dict": paper.state_dict()}, folder / "paper-lightning.pt")

    metrics = run(tmp_path, params_for(tmp_path, baselines={}), export_network(tmp_path / "m"), split)
    identity, other = metrics["published"]["NAFNet-identity"], metrics["published"]["paper-lightning"]
    assert set(metrics["published"]) == {"NAFNet-identity", "paper-lightning"}
    for key in ("psnr", "ssim", "psnr_y", "ssim_y", "ssim_3d"):
        assert identity[key] == pytest.approx(metrics["input"][key], abs=1e-12)
    assert identity["model"] == {"arch": "nafnet", "parameters": sum(p.numel() for p in nafnet.parameters()),
                                 "width": 4, "enc_blocks": [1, 1, 1, 1], "middle_blocks": 1, "dec_blocks": [1, 1, 1, 1],
                                 "size": "width 4, blocks 1-1-1-1 / 1 / 1-1-1-1"}
    sidd = identity["benchmarks"]["sidd_validation"]
    assert sidd["n_images"] == 2 and sidd["psnr"] == pytest.approx(sidd["input"]["psnr"], abs=1e-12)
    assert other["model"]["arch"] == "paper" and other["model"]["dcn_kernel"] == 4 and other["model"]["blocks"] == 2
    assert abs(other["psnr"] - metrics["input"]["psnr"]) > 1e-3 and math.isfinite(other["psnr"])
    assert other["file"] == str(folder / "paper-lightning.pt")

    (folder / "notes.txt").write_text("stray")
    with pytest.raises(ImrestoreError, match=r"notes.txt: expected only checkpoint files \(.pth, .pt\)"):
        run(tmp_path, params_for(tmp_path, baselines={}), export_network(tmp_path / "m"), split)


def test_max_images_picks_evenly_spaced_test_pairs(tmp_path):
    split = write_pairs(tmp_path / "pairs", count=5)
    assert select_test_pairs(split, 3).pair_id.tolist() == ["scene00", "scene02", "scene04"]
    assert "scene05" not in select_test_pairs(split).pair_id.tolist()  # the train pair


def test_a_corrupt_image_stops_evaluation_and_leaves_nothing_behind(tmp_path):
    split = write_pairs(tmp_path / "pairs", count=3)
    broken = pd.read_csv(split).target_path[1]
    Path(broken).write_bytes(Path(broken).read_bytes()[:100])  # truncated PNG
    with pytest.raises(ImrestoreError, match="scene01"):
        run(tmp_path, params_for(tmp_path, baselines={}), export_network(tmp_path / "m"), split)
    assert not (tmp_path / "out" / "denoise.json").exists()
    assert not (tmp_path / "out" / "denoise").exists()
    assert not list((tmp_path / "out").glob(".tmp-*"))


@pytest.mark.parametrize("override,message", [
    ({"baselines": {"denoise": ["median"]}}, "params.yaml: evaluate.baselines must be names from identity, "
                                             "nl_means, wavelet, tv for denoise, each once, found {'denoise': ['median']}"),
    ({"baselines": {"denoise": ["tv", "tv"]}}, "params.yaml: evaluate.baselines must be names from"),
    ({"tile": 30}, "params.yaml: evaluate.tile must be null or a multiple of 4 ≥ 4, found 30"),
    ({"max_images": 0}, "params.yaml: evaluate.max_images must be null or an integer ≥ 1, found 0"),
    ({"device": "mps"}, "params.yaml: evaluate.device must be auto, cpu, cuda or cuda:N, found 'mps'"),
    ({"colour": True}, "params.yaml: unknown key evaluate.colour; expected one of baselines, benchmarks, "),
])
def test_bad_evaluate_params_are_named(tmp_path, override, message):
    split = write_pairs(tmp_path / "pairs", count=1)
    with pytest.raises(ImrestoreError, match=f"^{re.escape(message)}"):
        run(tmp_path, params_for(tmp_path, **override), export_network(tmp_path / "m"), split)


def test_worst_crop_finds_the_most_degraded_region():
    target = np.zeros((64, 80, 3), np.uint8)
    degraded = target.copy()
    degraded[40:56, 8:24] = 200
    y, x, size = worst_crop(degraded, target)
    assert size == 16 and (y, x) == (40, 8)
