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

from imrestore.app.restore import load_weights
from imrestore.errors import ImrestoreError
from imrestore.evaluation.inference import InferenceConfig, restore_images
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
    pixels = torch.from_numpy(np.array(Image.open(source).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    expected = restore_images(load_weights(weights).eval(), pixels, InferenceConfig(tile=32, overlap=8))
    expected = (expected.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(written, expected)


def test_restore_a_folder_mirrors_it_and_reports_unreadable_files(tmp_path, weights):
    photo(tmp_path / "in" / "a.png")
    photo(tmp_path / "in" / "nested" / "b.png", mode="L")  # greyscale comes out as greyscale
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = imrestore("restore", "in", "--task", "denoise", "--weights", str(weights), "--out", "out", cwd=tmp_path)
    assert result.returncode == 1
    assert "broken.png" in result.stderr and "not a readable image" in result.stderr
    assert np.asarray(Image.open(tmp_path / "out" / "a.png")).shape == (60, 84, 3)
    assert np.asarray(Image.open(tmp_path / "out" / "nested" / "b.png")).shape == (60, 84)
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


# --- every kind of image: the fixture's network is the identity (its tail starts at zero), so what comes out
# must be what went in, at the input's bit depth, unless a printed note says otherwise.

def restore_one(tmp_path, source: Path, weights: Path) -> tuple[subprocess.CompletedProcess, Path]:
    result = imrestore("restore", str(source), "--task", "denoise", "--weights", str(weights), "--out", "out",
                       "--tile", "32", "--overlap", "8", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return result, tmp_path / "out" / source.with_suffix(".png").name


def ramp16(height=40, width=52, channels=None) -> np.ndarray:
    """Values over the whole 16-bit range, most of them above 255 (which 8-bit handling clips to white)."""
    values = np.linspace(0, 65535, height * width * (channels or 1)).round().astype(np.uint16)
    return values.reshape((height, width) if channels is None else (height, width, channels))


def test_a_16_bit_grey_png_is_restored_and_written_at_16_bits(tmp_path, weights):
    source = tmp_path / "grey16.png"
    Image.fromarray(ramp16()).save(source)
    assert Image.open(source).mode == "I;16"
    _, out = restore_one(tmp_path, source, weights)
    written = Image.open(out)
    assert written.mode == "I;16"
    np.testing.assert_array_equal(np.asarray(written), ramp16())


def test_a_16_bit_rgb_tiff_is_restored_and_written_as_a_16_bit_rgb_png(tmp_path, weights):
    import tifffile

    source = tmp_path / "colour16.tif"
    tifffile.imwrite(source, ramp16(channels=3))
    _, out = restore_one(tmp_path, source, weights)
    data = out.read_bytes()
    assert data[24:26] == bytes([16, 2])  # IHDR: bit depth 16, colour type RGB
    np.testing.assert_array_equal(np.asarray(Image.open(out)), (ramp16(channels=3) >> 8).astype(np.uint8))
    np.testing.assert_array_equal(decode_unfiltered_png16(data, 3), ramp16(channels=3))


def decode_unfiltered_png16(data: bytes, channels: int) -> np.ndarray:
    import struct
    import zlib

    width, height = struct.unpack(">II", data[16:24])
    idat_length = struct.unpack(">I", data[33:37])[0]
    assert data[37:41] == b"IDAT"
    rows = np.frombuffer(zlib.decompress(data[41:41 + idat_length]), np.uint8).reshape(height, -1)
    assert (rows[:, 0] == 0).all()  # filter type None on every row
    return rows[:, 1:].copy().view(">u2").reshape(height, width, channels).astype(np.uint16)


def test_a_16_bit_rgb_png_is_restored_from_its_top_8_bits_and_says_so(tmp_path, weights):
    from imrestore.app.user_images import encode_png16

    source = tmp_path / "colour16.png"
    source.write_bytes(encode_png16(ramp16(channels=3)))
    result, out = restore_one(tmp_path, source, weights)
    assert "a 16-bit colour PNG, which Pillow decodes to 8 bits" in result.stdout
    np.testing.assert_array_equal(np.asarray(Image.open(out)), (ramp16(channels=3) >> 8).astype(np.uint8))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_kept_unchanged(tmp_path, weights, mode):
    source = photo(tmp_path / f"{mode}.png", mode=mode.replace("A", "") or "RGB")
    image = Image.open(source).convert(mode)
    alpha = np.tile(np.linspace(0, 255, 84).astype(np.uint8), (60, 1))
    image.putalpha(Image.fromarray(alpha))
    image.save(source)
    _, out = restore_one(tmp_path, source, weights)
    written = Image.open(out)
    assert written.mode == mode
    np.testing.assert_array_equal(np.asarray(written), np.asarray(image))


def test_palette_and_cmyk_images_are_converted_with_a_note(tmp_path, weights):
    palette = photo(tmp_path / "in" / "palette.png", mode="P")
    cmyk = tmp_path / "in" / "print.jpg"
    Image.open(photo(tmp_path / "rgb.png")).convert("CMYK").save(cmyk, quality=95)
    result = imrestore("restore", "in", "--task", "denoise", "--weights", str(weights), "--out", "out",
                       "--tile", "32", "--overlap", "8", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "in/palette.png: a palette image, restored and written as RGB\n" in result.stdout
    assert "CMYK (converted without a colour profile)" in result.stdout
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "palette.png")),
                                  np.asarray(Image.open(palette).convert("RGB")))
    assert Image.open(tmp_path / "out" / "print.png").mode == "RGB"


def test_an_exif_rotated_jpeg_comes_out_upright(tmp_path, weights):
    source = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90° clockwise
    Image.open(photo(tmp_path / "rgb.png")).save(source, exif=exif, quality=95)
    result, out = restore_one(tmp_path, source, weights)
    assert "turned upright as its EXIF orientation (6) asks" in result.stdout
    assert Image.open(out).size == (60, 84)  # width × height: the 84 × 60 photo stood up


def test_outputs_respect_the_umask(tmp_path, weights):
    source = photo(tmp_path / "shot.png")
    env_umask = "umask 027 && "
    result = subprocess.run(["sh", "-c", env_umask + f"'{IMRESTORE}' restore '{source}' --task denoise --weights "
                             f"'{weights}' --out out --tile 32 --overlap 8"], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "shot.png").stat().st_mode & 0o777 == 0o640  # was 0600: mkstemp's own


def test_mistakes_are_named_before_anything_heavy_is_loaded(tmp_path):
    missing = imrestore("restore", "nope.png", "--task", "denoise", "--out", "o", cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.strip() == "error: nope.png: no such file or folder"
    source = photo(tmp_path / "shot.png")
    no_model = imrestore("restore", str(source), "--task", "denoise", "--out", "o", cwd=tmp_path)
    assert "no trained denoise model in models/denoise/ (where it is looked for without --weights)" in no_model.stderr
    assert "--weights models/denoise" not in no_model.stderr
    typo = imrestore("restore", str(source), "--task", "denoise", "--weights", "modles/denoise", "--out", "o",
                     cwd=tmp_path)
    assert "--weights modles/denoise does not exist" in typo.stderr


def test_a_bad_flag_is_named_as_the_user_typed_it(tmp_path):
    source = photo(tmp_path / "shot.png")
    for flags, message in ((["--tile-batch", "0"], "error: imrestore restore: --tile-batch must be an integer ≥ 1, "
                                                   "found 0"),
                           (["--tile", "250"], "error: imrestore restore: --tile must be 0 (the whole image at once) "
                                               "or a multiple of 4 ≥ 4, found 250"),
                           (["--tile", "-8"], "error: imrestore restore: --tile must be 0 (the whole image at once) "
                                              "or a multiple of 4 ≥ 4, found -8")):
        result = imrestore("restore", str(source), "--task", "denoise", "--out", "o", *flags, cwd=tmp_path)
        assert result.returncode == 1 and result.stderr.strip() == message
