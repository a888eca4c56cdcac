"""`imrestore restore` on real image files, through the installed command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from imrestore.errors import ImrestoreError
from imrestore.inference import InferenceConfig, restore_images
from imrestore.restore import load_weights
from imrestore.training import RestorationModule, export_weights

TINY_MODEL = {"blocks": 1, "features": 8}
IMRESTORE = Path(sys.executable).with_name("imrestore")


def imrestore(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(IMRESTORE), *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture
def weights(tmp_path) -> Path:
    torch.manual_seed(0)
    module = RestorationModule(TINY_MODEL, {})
    export_weights(module, tmp_path / "models" / "denoise", "denoise")
    return tmp_path / "models" / "denoise"


def photo(path: Path, size=(60, 84), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(skdata.astronaut()[100:100 + size[0], 150:150 + size[1]]).convert(mode).save(path)
    return path


def test_restore_a_file_matches_the_library(tmp_path, weights):
    source = photo(tmp_path / "in" / "shot.jpg")
    result = imrestore("restore", str(source), "--task", "denoise", "--out", "out", "--tile", "32",
                       "--overlap", "8", cwd=tmp_path)  # default --weights: models/denoise under the cwd
    assert result.returncode == 0, result.stderr
    written = np.asarray(Image.open(tmp_path / "out" / "shot.png"))
    pixels = torch.from_numpy(np.asarray(Image.open(source).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    expected = restore_images(load_weights(weights).eval(), pixels, InferenceConfig(tile=32, overlap=8))
    expected = (expected.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(written, expected)


def test_restore_a_folder_mirrors_it_and_reports_unreadable_files(tmp_path, weights):
    photo(tmp_path / "in" / "a.png")
    photo(tmp_path / "in" / "nested" / "b.png", mode="L")  # greyscale comes out as RGB
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = imrestore("restore", "in", "--task", "denoise", "--weights", str(weights), "--out", "out", cwd=tmp_path)
    assert result.returncode == 1
    assert "broken.png" in result.stderr and "not a readable image" in result.stderr
    assert np.asarray(Image.open(tmp_path / "out" / "a.png")).shape == (60, 84, 3)
    assert np.asarray(Image.open(tmp_path / "out" / "nested" / "b.png")).shape == (60, 84, 3)
    assert not (tmp_path / "out" / "broken.png").exists()


def test_weights_for_another_task_or_model_are_refused(tmp_path, weights):
    source = photo(tmp_path / "in.png")
    result = imrestore("restore", str(source), "--task", "deblur", "--weights", str(weights), "--out", "o",
                       cwd=tmp_path)
    assert result.returncode == 1 and "trained for denoise, not deblur" in result.stderr
    config = json.loads((weights / "config.json").read_text())
    config["model"]["blocks"] = 3
    (weights / "config.json").write_text(json.dumps(config))
    result = imrestore("restore", str(source), "--task", "denoise", "--weights", str(weights), "--out", "o",
                       cwd=tmp_path)
    assert result.returncode == 1 and "does not fit the model in config.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_refuses_to_overwrite_its_input(tmp_path, weights):
    source = photo(tmp_path / "in" / "x.png")
    result = imrestore("restore", "in", "--task", "denoise", "--weights", str(weights), "--out", "in", cwd=tmp_path)
    assert result.returncode == 1 and "would overwrite the input" in result.stderr
    assert np.asarray(Image.open(source)).shape == (60, 84, 3)


def test_lightning_checkpoints_load_with_weights_only(tmp_path):
    torch.manual_seed(0)
    module = RestorationModule(TINY_MODEL, {})
    checkpoint = {"hyper_parameters": {"model": TINY_MODEL}, "state_dict": {f"net.{k}": v for k, v in
                                                                              module.net.state_dict().items()}}
    torch.save(checkpoint, tmp_path / "last.ckpt")
    net = load_weights(tmp_path / "last.ckpt").eval()
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        torch.testing.assert_close(net(x), module.net.eval()(x))


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    torch.save({"hyper_parameters": {"model": TINY_MODEL}, "state_dict": {}, "evil": Payload()}, tmp_path / "x.ckpt")
    with pytest.raises(ImrestoreError, match="cannot be loaded safely"):
        load_weights(tmp_path / "x.ckpt")
