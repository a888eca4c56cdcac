"""The user's own images for `imrestore restore`: read whatever they are, write them back as they were.

The network sees RGB in [0, 1]. Everything else an image can be is decided here, once, per Pillow mode:

| input                          | the network sees                  | written as                             |
|--------------------------------|-----------------------------------|----------------------------------------|
| 8-bit RGB                      | RGB / 255                         | 8-bit RGB PNG                          |
| 8-bit grey (L, 1-bit)          | the grey repeated in R, G, B      | 8-bit grey PNG (mean of the channels)  |
| 16-bit grey PNG/TIFF (I;16)    | grey / 65535, repeated            | 16-bit grey PNG                        |
| 16-bit RGB TIFF (tifffile)     | RGB / 65535                       | 16-bit RGB PNG                         |
| 16-bit RGB PNG                 | its top 8 bits / 255 (a note says)| 8-bit RGB PNG                          |
| RGBA, LA, palette with alpha   | the colour; alpha set aside       | the same with the alpha unchanged      |
| grey/RGB PNG with tRNS         | the colour; its tRNS as alpha     | LA/RGBA, that alpha (a note says)      |
| palette, CMYK, YCbCr, LAB, HSV | converted to RGB (a note says)    | 8-bit RGB PNG                          |
| EXIF/TIFF orientation ≠ 1      | the image turned upright (a note) | upright                                |

Pillow decodes 16-bit colour PNGs to 8 bits (it has no 16-bit RGB mode), so such a file is restored from its
top 8 bits and the note says so; a 16-bit colour TIFF is read exactly through tifffile. An ICC colour profile
is written back with the result (except after a conversion to RGB, whose values it no longer describes).
Nothing is reduced or dropped without a note that the command prints.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imrestore import atomic
from imrestore.errors import ImrestoreError

_CONVERTED_TO_RGB = {
    "P": "a palette image",
    "PA": "a palette image",
    "CMYK": "CMYK (converted without a colour profile)",
    "YCbCr": "YCbCr",
    "LAB": "CIE L*a*b*",
    "HSV": "HSV",
}
_OTHER_COLOUR_SPACES = ("CMYK", "YCbCr", "LAB", "HSV")  # converted to RGB: their ICC profile no longer applies
_GREY_16 = ("I;16", "I;16B", "I;16L", "I;16N")
# EXIF / TIFF orientation (tag 274) → what stands the H×W(×C) pixels upright, as ImageOps.exif_transpose does
_UPRIGHT = {2: lambda v: v[:, ::-1], 3: lambda v: v[::-1, ::-1], 4: lambda v: v[::-1], 5: lambda v: v.swapaxes(0, 1),
            6: lambda v: np.rot90(v, -1), 7: lambda v: np.rot90(v, 2).swapaxes(0, 1), 8: lambda v: np.rot90(v)}
_TIFF_SUFFIXES = (".tif", ".tiff")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class UserImage:
    """An image ready for the network, and what is needed to write the result back in its kind."""

    rgb: np.ndarray  # H×W×3 float32 in [0, 1]
    bits: int  # 8 or 16: the depth the result is written at
    grey: bool  # written back as one channel
    alpha: np.ndarray | None = None  # H×W, uint8 or uint16, written back unchanged
    notes: list[str] = field(default_factory=list)
    icc: bytes | None = None  # the input's colour profile, written back: the restored values are in its space


def read_user_image(path: Path) -> UserImage:
    """Decode `path` for restoration (see the module's table); an unreadable file is a clear ImrestoreError."""
    path = Path(path)
    try:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            deep = _read_deep_tiff(path)
            if deep is not None:
                return deep
        with Image.open(path) as opened:
            opened.load()
            image = _from_pillow(path, ImageOps.exif_transpose(opened), _upright_notes(opened.getexif().get(0x0112)))
            if opened.mode not in _OTHER_COLOUR_SPACES:
                image.icc = opened.info.get("icc_profile")
            return image
    except Image.DecompressionBombError as exc:  # raised on open, before any pixel is decoded
        raise ImrestoreError(f"{path}: not read: too large for Pillow, which refuses it as a possible "
                             f"decompression bomb ({exc}); split it into smaller images to restore it") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImrestoreError(f"{path}: not a readable image ({exc})") from None


def _upright_notes(orientation: int | None) -> list[str]:
    return [f"turned upright as its EXIF orientation ({orientation}) asks"] if orientation in _UPRIGHT else []


def _from_pillow(path: Path, image: Image.Image, notes: list[str]) -> UserImage:
    mode = image.mode
    # A PNG's tRNS chunk makes one grey value or colour transparent: kept as an alpha channel, which is what
    # it means once the pixels around it are restored (and no longer exactly that value)
    transparent = image.info.get("transparency") if mode in ("1", "L", "RGB", *_GREY_16) else None
    if transparent is not None:
        notes.append(f"its transparent {'grey' if mode != 'RGB' else 'colour'} ({transparent}, a tRNS chunk) "
                     "kept as an alpha channel")
    if mode in _GREY_16:
        values = np.asarray(image)
        alpha = None if transparent is None else np.where(values == transparent, 0, 65535).astype(np.uint16)
        grey = values.astype(np.float32) / 65535.0
        return UserImage(np.repeat(grey[..., None], 3, axis=2), 16, True, alpha, notes)
    if mode == "I":  # 32-bit integers: what some readers make of 16-bit grey
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise ImrestoreError(f"{path}: expected pixel values within 16 bits, found {values.min()}…{values.max()} "
                                 "(32-bit integer image)")
        grey = values.astype(np.float32) / 65535.0
        return UserImage(np.repeat(grey[..., None], 3, axis=2), 16, True, notes=notes)
    if mode == "F":
        raise ImrestoreError(f"{path}: a 32-bit floating-point image has no defined range; expected 8 or 16-bit "
                             "integers (convert it to a 16-bit PNG or TIFF)")
    if mode in ("1", "L", "LA", "La"):
        grey_alpha = np.asarray(image.convert("LA"))
        grey = grey_alpha[..., 0].astype(np.float32) / 255.0
        alpha = grey_alpha[..., 1] if mode in ("LA", "La") or transparent is not None else None
        return UserImage(np.repeat(grey[..., None], 3, axis=2), 8, True, alpha, notes)
    if mode in _CONVERTED_TO_RGB:
        keep_alpha = mode == "PA" or (mode == "P" and "transparency" in image.info)
        image = image.convert("RGBA" if keep_alpha else "RGB")
        notes.append(f"{_CONVERTED_TO_RGB[mode]}, restored and written as RGB{'A' if keep_alpha else ''}")
        mode = image.mode
    if mode in ("RGBa", "RGBX"):  # premultiplied alpha, padding byte: the plain modes they stand for
        mode = "RGBA" if mode == "RGBa" else "RGB"
        image = image.convert(mode)
    if mode not in ("RGB", "RGBA"):
        raise ImrestoreError(f"{path}: images of mode {mode!r} are not supported; expected RGB, RGBA, grey, "
                             "palette or CMYK")
    pixels = np.asarray(image)
    deep = _png_bit_depth(path) == 16
    if deep:
        notes.append("a 16-bit colour PNG, which Pillow decodes to 8 bits: restored from its top 8 bits and "
                     "written at 8 bits (a 16-bit TIFF keeps all 16)")
    alpha = pixels[..., 3].copy() if mode == "RGBA" else None
    if transparent is not None:  # an RGB tRNS colour; of a 16-bit PNG, matched on its top 8 bits as the pixels are
        key = np.asarray(transparent) >> (8 if deep else 0)
        alpha = np.where((pixels == key).all(axis=2), 0, 255).astype(np.uint8)
    return UserImage(pixels[..., :3].astype(np.float32) / 255.0, 8, False, alpha, notes)


def _read_deep_tiff(path: Path) -> UserImage | None:
    """A 16-bit TIFF through tifffile, which reads every bit; None for other TIFFs (Pillow reads those)."""
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        if page.dtype != np.uint16:
            return None
        values = page.asarray()
        orientation, icc = (page.tags.get(name) for name in ("Orientation", "InterColorProfile"))
        orientation = None if orientation is None else int(orientation.value)
        icc = None if icc is None else bytes(icc.value)
    if orientation in _UPRIGHT:
        values = np.ascontiguousarray(_UPRIGHT[orientation](values))
    notes = _upright_notes(orientation)
    if values.ndim == 2:
        grey = values.astype(np.float32) / 65535.0
        return UserImage(np.repeat(grey[..., None], 3, axis=2), 16, True, notes=notes, icc=icc)
    if values.ndim == 3 and values.shape[2] in (3, 4):
        alpha = values[..., 3].copy() if values.shape[2] == 4 else None
        return UserImage(values[..., :3].astype(np.float32) / 65535.0, 16, False, alpha, notes, icc)
    raise ImrestoreError(f"{path}: expected a 16-bit grey, RGB or RGBA TIFF, found an array of shape {values.shape}")


def _png_bit_depth(path: Path) -> int | None:
    with path.open("rb") as stream:
        head = stream.read(25)
    return head[24] if head.startswith(_PNG_MAGIC) and len(head) == 25 else None


def write_user_image(path: Path, restored: np.ndarray, like: UserImage) -> None:
    """Write the network's H×W×3 output in [0, 1] as a PNG of the input's kind, atomically."""
    top = 65535 if like.bits == 16 else 255
    dtype = np.uint16 if like.bits == 16 else np.uint8
    values = np.clip(restored, 0.0, 1.0)
    if like.grey:
        values = values.mean(axis=2)
    values = np.rint(values * top).astype(dtype)
    if like.alpha is not None:
        alpha = like.alpha.astype(dtype) if like.alpha.dtype == dtype else _rescale(like.alpha, dtype)
        values = np.concatenate([values[..., None] if like.grey else values, alpha[..., None]], axis=2)
    with atomic.atomic_file(path) as tmp:  # a half-written PNG never appears under its final name
        if like.bits == 16 and values.ndim == 3:
            tmp.write_bytes(encode_png16(values, like.icc))  # Pillow cannot write 16-bit colour
        else:
            Image.fromarray(values).save(tmp, format="PNG", icc_profile=like.icc)


def _rescale(alpha: np.ndarray, dtype: type) -> np.ndarray:
    source_top = np.iinfo(alpha.dtype).max
    target_top = np.iinfo(dtype).max
    return np.rint(alpha.astype(np.float64) * target_top / source_top).astype(dtype)


def encode_png16(values: np.ndarray, icc: bytes | None = None) -> bytes:
    """A 16-bit grey+alpha, RGB or RGBA PNG (H×W×C uint16): IHDR, the colour profile (iCCP) if given, one IDAT
    of unfiltered rows, IEND."""
    height, width, channels = values.shape
    colour_type = {2: 4, 3: 2, 4: 6}[channels]
    rows = np.ascontiguousarray(values.astype(">u2")).reshape(height, width * channels).view(np.uint8)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()  # filter byte 0: None

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    profile = chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc)) if icc else b""  # name, 0, method 0: zlib
    return (_PNG_MAGIC + chunk(b"IHDR", header) + profile + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))
