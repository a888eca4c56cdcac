"""Validation on tiny real-PNG datasets: every broken file is named with the rule it breaks."""

import json
import shutil

import pandas as pd
import pytest

from imrestore.data.validation import validate_dataset
from imrestore.errors import ImrestoreError
from layout_builders import GOPRO_COUNTS, SIDD_COUNTS, natural_image, save_png, save_png16_rgb, write_gopro, write_sidd


def run(tmp_path, dataset, root, expected=None):
    expected = expected or (GOPRO_COUNTS if dataset == "gopro" else SIDD_COUNTS)
    return validate_dataset(dataset, root, expected, tmp_path / "out" / f"{dataset}.csv",
                            tmp_path / "reports" / dataset, workers=2)


def failure(tmp_path, dataset, root, expected=None) -> str:
    with pytest.raises(ImrestoreError) as caught:
        run(tmp_path, dataset, root, expected)
    assert not (tmp_path / "out" / f"{dataset}.csv").exists(), "an invalid dataset must not leave a manifest"
    summary = json.loads((tmp_path / "reports" / dataset / "summary.json").read_text())
    assert summary["valid"] is False and summary["problems"] >= 1
    return str(caught.value)


def test_valid_gopro_writes_manifest_summary_and_data_docs(tmp_path):
    root = write_gopro(tmp_path / "raw")
    summary = run(tmp_path, "gopro", root)
    manifest = pd.read_csv(tmp_path / "out" / "gopro.csv")
    assert len(manifest) == 6 and summary["splits"] == GOPRO_COUNTS and summary["valid"]
    assert {"input_path", "target_path", "input_sha256", "input_width", "input_bit_depth", "sequence"} <= set(manifest)
    assert manifest["input_path"].str.contains("/blur/").all() and manifest["target_path"].str.contains("/sharp/").all()
    assert (manifest["input_width"] == 48).all() and (manifest["input_channels"] == 3).all()
    docs = tmp_path / "reports" / "gopro" / "data_docs"
    assert (docs / "index.html").is_file() and list(docs.glob("validations/**/*.html"))
    assert summary["expectations"]["evaluated"] == summary["expectations"]["successful"] > 5


def test_valid_sidd_summary_counts_cameras_and_isos(tmp_path):
    summary = run(tmp_path, "sidd", write_sidd(tmp_path / "raw"))
    assert summary["camera"] == {"GP": 1, "IP": 1, "S6": 1}
    assert summary["iso"] == {"100": 1, "800": 1, "1600": 1}
    manifest = pd.read_csv(tmp_path / "out" / "sidd.csv")
    assert set(manifest["brightness"]) == {"L", "N", "H"} and manifest["input_path"].str.endswith("NOISY_SRGB_010.PNG").all()


def test_truncated_png_is_named(tmp_path):
    root = write_gopro(tmp_path / "raw")
    victim = next(root.glob("train/*/blur/000002.png"))
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    message = failure(tmp_path, "gopro", root)
    assert f"{victim.as_posix()}: input must be a readable, fully decodable image" in message


def test_missing_partner_is_named(tmp_path):
    root = write_sidd(tmp_path / "raw")
    gt = next(root.glob("Data/*/GT_SRGB_010.PNG"))
    gt.unlink()
    message = failure(tmp_path, "sidd", root)
    assert f"{gt.with_name('NOISY_SRGB_010.PNG').as_posix()}: has no target partner" in message


def test_size_mismatch_is_named(tmp_path):
    root = write_gopro(tmp_path / "raw")
    victim = next(root.glob("test/*/sharp/000001.png"))
    save_png(victim, natural_image(99, width=40))
    message = failure(tmp_path, "gopro", root)
    assert "input and target sizes differ (found input 48x32, target 40x32)" in message
    assert victim.with_name("000001.png").parent.parent.name in message


def test_grayscale_and_16_bit_images_are_named(tmp_path):
    root = write_gopro(tmp_path / "raw")
    gray = next(root.glob("train/*/sharp/000001.png"))
    save_png(gray, natural_image(7)[..., 0])
    deep = next(root.glob("test/*/blur/000002.png"))
    save_png16_rgb(deep)
    message = failure(tmp_path, "gopro", root)
    assert f"{gray.as_posix()}: target must be RGB (3 channels) (found 1)" in message
    assert f"{deep.as_posix()}: input must have 8 bits per channel (found 16)" in message


def test_duplicate_content_and_identical_pairs_fail_the_expectations(tmp_path):
    root = write_gopro(tmp_path / "raw")
    blur = sorted(root.glob("train/*/blur/*.png"))
    shutil.copyfile(blur[0], blur[1])  # two pairs share an input
    target = blur[2].parent.parent / "sharp" / blur[2].name
    shutil.copyfile(target, blur[2])  # input identical to its target
    message = failure(tmp_path, "gopro", root)
    assert f"{blur[1].as_posix()}: no two pairs share the same input content" in message
    assert f"{blur[2].as_posix()}: the input differs from its target (found 0.0)" in message


def test_wrong_pair_count_and_unknown_camera_fail_the_expectations(tmp_path):
    root = write_sidd(tmp_path / "raw")
    folder = next((root / "Data").iterdir())
    folder.rename(folder.with_name(folder.name.replace("_S6_", "_ZZ_")))
    message = failure(tmp_path, "sidd", root, expected={"all": 160})
    assert "split all: expected 160 pairs, as validate.sidd.expected_pairs says (found 3)" in message
    assert "camera is one of SIDD's GP, IP, S6, N6, G4 (found ZZ)" in message
