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


# --- what restore writes: never an input, never one PNG for two images, and a clear error where it cannot write

def untouched(*paths: Path):
    """Each path's bytes now, to compare with afterwards."""
    return {path: path.read_bytes() for path in paths}


def test_an_input_under_out_is_never_overwritten(tmp_path, weights):
    top = photo(tmp_path / "ph" / "a.jpg")
    nested = photo(tmp_path / "ph" / "sub" / "a.png", size=(30, 40))  # ph/a.jpg would be restored to ph/sub/a.png
    before = untouched(top, nested)
    result = imrestore("restore", "ph", "--task", "denoise", "--weights", str(weights), "--out", "ph/sub",
                       cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert ("error: --out ph/sub would overwrite the input ph/sub/a.png with the restoration of ph/a.jpg "
            "(ph/sub/a.png); choose another folder") in result.stderr
    assert untouched(top, nested) == before and sorted(p.name for p in (tmp_path / "ph").rglob("*")) == [
        "a.jpg", "a.png", "sub"]


def test_two_inputs_restored_to_one_png_are_refused(tmp_path, weights):
    jpeg, png = photo(tmp_path / "in" / "rgb.jpg"), photo(tmp_path / "in" / "rgb.png", mode="L")
    result = imrestore("restore", "in", "--task", "denoise", "--weights", str(weights), "--out", "out", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "in/rgb.jpg and in/rgb.png would both be written to out/rgb.png" in result.stderr
    assert not (tmp_path / "out").exists(), "refused before anything was written"
    assert jpeg.is_file() and png.is_file()


@pytest.mark.parametrize("layout, out, message", [
    ({"afile": "file"}, "afile", "error: afile is a file; expected --out, the folder for the restored PNGs"),
    ({"afile": "file"}, "afile/sub", "error: afile/sub cannot be created: afile is a file; expected --out"),
    ({"o/shot.png": "folder"}, "o", "error: o/shot.png is a folder; expected the restored PNG of shot.png"),
])
def test_an_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, weights, layout, out, message):
    source = photo(tmp_path / "shot.png")
    for path, kind in layout.items():
        (tmp_path / path).mkdir(parents=True) if kind == "folder" else (tmp_path / path).write_text("mine")
    # no such weights: had the outputs not been checked first, the error would be about them
    result = imrestore("restore", source.name, "--task", "denoise", "--weights", "nowhere", "--out", out,
                       cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.rglob(".tmp-*"))
    assert all((tmp_path / path).is_dir() or (tmp_path / path).read_text() == "mine" for path in layout)


def limited_file_size(limit: int):
    """preexec_fn: writes past `limit` bytes fail with EFBIG, as a full disk fails them with ENOSPC (ignoring
    SIGXFSZ, whose default would kill the process instead)."""
    import resource
    import signal

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_failed_write_names_the_file_and_leaves_nothing_half_written(tmp_path, weights):
    source = photo(tmp_path / "shot.png")
    result = subprocess.run([str(IMRESTORE), "restore", str(source), "--task", "denoise", "--weights", str(weights),
                             "--out", "out"], cwd=tmp_path, capture_output=True, text=True,
                            preexec_fn=limited_file_size(1000))  # the 60×84 photo's PNG is ~13 kB
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: out/shot.png could not be written: File too large" in result.stderr
    assert list((tmp_path / "out").iterdir()) == [], "no half-written PNG, no temporary"


def test_a_garbage_model_pt_is_named(tmp_path, weights):
    source = photo(tmp_path / "shot.png")
    (weights / "model.pt").write_bytes(b"these are not the tensors you are looking for")
    result = imrestore("restore", str(source), "--task", "denoise", "--weights", str(weights), "--out", "o",
                       cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: {weights / 'model.pt'} cannot be loaded safely (weights_only=True): expected a file torch.save " \
           "wrote of tensors and plain values" in result.stderr


def checkpoint_of(folder: Path, task: str | None) -> Path:
    """A training checkpoint as train@<task> leaves it: last.ckpt, and run.json naming the task (None: no run.json)."""
    from imrestore.training import LAST_CHECKPOINT, RUN_FILE

    torch.manual_seed(0)
    module = RestorationModule(TINY_MODEL, {})
    folder.mkdir(parents=True)
    torch.save({"hyper_parameters": dict(module.hparams),
                "state_dict": {f"net.{k}": v for k, v in module.net.state_dict().items()}}, folder / LAST_CHECKPOINT)
    if task is not None:
        (folder / RUN_FILE).write_text(json.dumps({"task": task, "model": TINY_MODEL}))
    return folder / LAST_CHECKPOINT


def test_a_checkpoint_of_the_other_task_is_refused(tmp_path):
    from imrestore.app import restore
    from imrestore.training import RUN_FILE

    assert restore.RUN_FILE == RUN_FILE, "restore reads the file training writes"
    source = photo(tmp_path / "shot.png")
    deblur = checkpoint_of(tmp_path / "build" / "checkpoints" / "deblur", "deblur")
    result = imrestore("restore", str(source), "--task", "denoise", "--weights", str(deblur), "--out", "o",
                       cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (f"error: {deblur} was trained for deblur, not denoise ({deblur.parent / 'run.json'} says so)"
            in result.stderr)
    assert not (tmp_path / "o").exists()
    for task, folder in (("denoise", "denoise"), (None, "copied")):  # its own task, or no record: restored
        weights = checkpoint_of(tmp_path / folder, task)
        result = imrestore("restore", str(source), "--task", "denoise", "--weights", str(weights), "--out", folder,
                           cwd=tmp_path)
        assert result.returncode == 0, result.stderr


def oversized_png(path: Path, side: int = 20000) -> Path:
    """A valid 1-bit PNG of side² pixels (400 million: over Pillow's decompression-bomb limit), ~50 kB on disk."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(bytes(side * (1 + side // 8)), 9)  # filter byte + side/8 bytes per row, all 0: black
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


def test_an_oversized_image_is_named_and_skipped(tmp_path, weights):
    photo(tmp_path / "in" / "a.png")
    oversized_png(tmp_path / "in" / "huge.png")
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "in" / "huge.png")
    result = imrestore("restore", "in", "--task", "denoise", "--weights", str(weights), "--out", "out", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert ("in/huge.png: not read: too large for Pillow, which refuses it as a possible decompression bomb (Image "
            "size (400000000 pixels) exceeds limit of") in result.stderr
    assert "restored 1 image(s) into out" in result.stdout and (tmp_path / "out" / "a.png").is_file()


@pytest.mark.parametrize("device", ["mps", "meta", "gpu", "cpu:1"])
def test_a_device_inference_cannot_use_is_refused(tmp_path, weights, device):
    source = photo(tmp_path / "shot.png")
    result = imrestore("restore", str(source), "--task", "denoise", "--weights", str(weights), "--out", "o",
                       "--device", device, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: device must be auto, cpu, cuda or cuda:N, found {device!r}"


def test_a_folder_named_like_an_image_is_walked_not_read(tmp_path, weights):
    photo(tmp_path / "photos" / "trip.jpg" / "day1.png")
    result = imrestore("restore", "photos", "--task", "denoise", "--weights", str(weights), "--out", "out",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")] == [
        "trip.jpg/day1.png"]


@pytest.mark.parametrize("mode, transparent", [("L", 40), ("RGB", (40, 40, 40)), ("I;16", 40 * 257)])
def test_a_trns_transparent_value_becomes_an_alpha_channel(tmp_path, weights, mode, transparent):
    grey = np.tile(np.arange(0, 84, dtype=np.uint16) * 20 % 256, (60, 1))  # 40 appears, so some pixels vanish
    pixels = {"L": grey.astype(np.uint8), "RGB": np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2),
              "I;16": grey * 257}[mode]
    source = tmp_path / f"{mode.replace(';', '')}.png"
    Image.fromarray(pixels).save(source, transparency=transparent)
    assert Image.open(source).mode == mode and Image.open(source).info["transparency"] == transparent
    result, out = restore_one(tmp_path, source, weights)
    assert f"({transparent}, a tRNS chunk) kept as an alpha channel" in result.stdout
    written = np.asarray(Image.open(out)) if mode != "I;16" else None
    key = pixels if mode != "RGB" else pixels[..., 0]
    hidden = key == (transparent if mode != "RGB" else transparent[0])
    assert hidden.any() and not hidden.all()
    if mode == "I;16":  # 16-bit grey + alpha: Pillow reads it back at 8 bits, so decode the PNG itself
        written = decode_unfiltered_png16(out.read_bytes(), 2)
        np.testing.assert_array_equal(written[..., 1], np.where(hidden, 0, 65535))
        np.testing.assert_array_equal(written[..., 0], pixels)
    else:
        assert Image.open(out).mode == {"L": "LA", "RGB": "RGBA"}[mode]
        np.testing.assert_array_equal(written[..., -1], np.where(hidden, 0, 255))
        np.testing.assert_array_equal(written[..., :-1].squeeze(), pixels)


def test_a_16_bit_tiff_is_turned_upright_and_colour_profiles_are_kept(tmp_path, weights):
    import tifffile
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = tmp_path / "scan.tif"  # orientation 6: turned 90° clockwise to display
    tifffile.imwrite(source, ramp16(channels=3), photometric="rgb",
                     extratags=[(274, "H", 1, 6, True), (34675, "B", len(icc), icc, True)])
    result, out = restore_one(tmp_path, source, weights)
    assert "turned upright as its EXIF orientation (6) asks" in result.stdout
    np.testing.assert_array_equal(decode_png16_with_profile(out.read_bytes(), 3), np.rot90(ramp16(channels=3), -1))
    assert Image.open(out).info["icc_profile"] == icc
    eight_bit = tmp_path / "eight.png"
    Image.open(photo(tmp_path / "rgb.png")).save(eight_bit, icc_profile=icc)
    _, out = restore_one(tmp_path, eight_bit, weights)
    assert Image.open(out).info["icc_profile"] == icc


def decode_png16_with_profile(data: bytes, channels: int) -> np.ndarray:
    """decode_unfiltered_png16 of a PNG whose iCCP chunk sits between IHDR and IDAT."""
    import struct

    assert data[37:41] == b"iCCP"
    iccp = 12 + struct.unpack(">I", data[33:37])[0]
    return decode_unfiltered_png16(data[:33] + data[33 + iccp:], channels)
