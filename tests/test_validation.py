"""Validation on tiny real-PNG datasets: every broken file is named with the rule it breaks."""

import json
import shutil
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imrestore.data.validation import validate_dataset
from imrestore.errors import ImrestoreError
from layout_builders import (GOPRO_COUNTS, SIDD_COUNTS, degraded, natural_image, save_png, save_png16_rgb,
                             write_gopro, write_sidd)


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


def test_data_docs_are_the_same_bytes_for_the_same_manifest(tmp_path):
    # dvc.lock records the docs' hash: wall-clock stamps or random ids would change it on every repro.
    root = write_gopro(tmp_path / "raw")

    def docs_of(name: str) -> dict[str, bytes]:
        docs = tmp_path / name / "data_docs"
        validate_dataset("gopro", root, GOPRO_COUNTS, tmp_path / name / "gopro.csv", tmp_path / name, workers=1)
        return {str(p.relative_to(docs)): p.read_bytes() for p in sorted(docs.rglob("*")) if p.is_file()}

    first, second = docs_of("first"), docs_of("second")
    assert first == second
    pages = [name for name in first if name.startswith("validations/")]
    assert pages and all("/manifest-" in name and "/19700101T000000.000000Z/" in name for name in pages)
    today = time.strftime("%Y%m%d", time.gmtime()).encode()
    assert not any(today in text for text in first.values()), "a wall-clock stamp is left in the docs"
    blur = sorted(root.rglob("blur/*.png"))[0]
    save_png(blur, degraded(np.asarray(Image.open(blur.parent.parent / "sharp" / blur.name)), seed=99))
    changed = docs_of("changed")
    assert {n for n in changed if n.startswith("validations/")}.isdisjoint(pages), "the run is named by its manifest"


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


def test_missing_files_are_reported_once_each_and_nothing_else(tmp_path):
    # A missing file has no size and no content: it used to come back as "sizes differ (target 0x0)", as
    # unreadable, and, through its empty hash, as content shared with the other missing file ("nan: …").
    root = write_gopro(tmp_path / "raw")
    sharp = [root / "train/GOPR0372_07_00/sharp/000002.png", root / "train/GOPR0374_11_00/sharp/000001.png"]
    blur = next(root.glob("test/*/blur/000001.png"))
    for path in (*sharp, blur):
        path.unlink()
    message = failure(tmp_path, "gopro", root)
    expected = sorted([f"{s.parent.parent / 'blur' / s.name}: has no target partner (found nothing)" for s in sharp]
                      + [f"{blur.parent.parent / 'sharp' / blur.name}: has no input partner (found nothing)"])
    assert sorted(line.removeprefix("  - ") for line in message.splitlines() if line.startswith("  - ")) == expected
    assert json.loads((tmp_path / "reports" / "gopro" / "summary.json").read_text())["problems"] == 3


def test_unidentifiable_files_are_named_once_by_their_path(tmp_path):
    root = write_gopro(tmp_path / "raw")
    victim = next(root.glob("test/*/sharp/000002.png"))
    victim.write_bytes(b"<html>404 Not Found</html>")  # what a failed download often leaves
    empty = sorted(root.glob("train/*/sharp/000001.png"))
    for path in empty:  # the same (empty) bytes: undecodable, not content shared between pairs
        path.write_bytes(b"")
    message = failure(tmp_path, "gopro", root)
    assert (f"{victim}: target must be a readable, fully decodable image (found cannot decode: {victim} is in no "
            "image format Pillow identifies (it starts with b'<html>404 Not Fo'))") in message
    for path in empty:
        assert f"{path}: target must be a readable, fully decodable image (found cannot decode: {path} " in message
    assert "object at 0x" not in message and "sizes differ" not in message and "share" not in message
    assert json.loads((tmp_path / "reports" / "gopro" / "summary.json").read_text())["problems"] == 3


def test_size_mismatch_is_named(tmp_path):
    root = write_gopro(tmp_path / "raw")
    victim = next(root.glob("test/*/sharp/000001.png"))
    save_png(victim, natural_image(99, width=40))
    message = failure(tmp_path, "gopro", root)
    assert "input and target sizes differ (found input 48x32, target 40x32)" in message
    assert victim.with_name("000001.png").parent.parent.name in message
    # pandera fails a pair-level check once per column: the pair is still one problem, not one per file
    assert json.loads((tmp_path / "reports" / "gopro" / "summary.json").read_text())["problems"] == 1


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
