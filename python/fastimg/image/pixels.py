"""A decoded frame made into 8-bit sRGB pixels (L, RGB or RGBA), and the
orientation it is to be shown in."""

from __future__ import annotations

import io
from typing import cast

import numpy as np
from PIL import Image, ImageCms, ImageFile

from .wide import decode_16bit, rawmode

_GREY = ("1", "L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I;16BS")
_SRGB = ImageCms.createProfile("sRGB")
_LAB = ImageCms.createProfile("LAB")

TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
TRANSPOSED = (5, 6, 7, 8)  # orientations that swap width and height
# Grey PNGs of fewer than 8 bits: Pillow scales their samples to 8 bits but
# keeps the colour key as stored, so the key is scaled the same way.
_LOW_BIT_GREY = {"L;2": 85, "L;4": 17}


def has_alpha(im: Image.Image) -> bool:
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return True
    if "transparency" in im.info:
        return True
    palette = im.palette if im.mode == "P" else None
    return palette is not None and palette.mode == "RGBA"


def bands(im: Image.Image) -> int:
    """Channels the decoded pixels will have: 1, 3 or 4."""
    return 4 if has_alpha(im) else (1 if im.mode in _GREY else 3)


def orientation(im: Image.Image) -> int:
    """How ``im`` is to be turned upright, by one rule for every container:
    the EXIF orientation (a JPEG's APP1, a PNG's eXIf, the TIFF tag, a WebP's
    EXIF chunk), else XMP's tiff:Orientation (Pillow's getexif reads both),
    from the image as its decoder left it, before any conversion."""
    value = im.getexif().get(0x0112, 1)
    return value if isinstance(value, int) and value in TRANSPOSE else 1


def to_srgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """``im`` (loaded) converted from its ICC profile to sRGB."""
    # A grey profile changes tone only, and sRGB has no grey space to map it to.
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK"):
        return im
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        transform = ImageCms.buildTransform(src, _SRGB, im.mode, "RGBA" if im.mode == "RGBA" else "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return im  # a broken profile, or one for another colour space, is ignored, as browsers do
    return cast(Image.Image, ImageCms.applyTransform(im, transform))  # not in place: always an image


def _wide_grey(out: Image.Image) -> Image.Image:
    grey = np.asarray(out)
    key = out.info.get("transparency")
    rounded = np.clip(np.floor(grey.astype(np.float64) / 257 + 0.5), 0, 255).astype(np.uint8)
    if isinstance(key, int):
        alpha = np.where(grey == key, 0, 255).astype(np.uint8)
        return Image.fromarray(np.dstack([rounded, rounded, rounded, alpha]), "RGBA")
    return Image.fromarray(rounded, "L")


def load_pixels(im: ImageFile.ImageFile, data: bytes) -> tuple[Image.Image, int]:
    """The first frame loaded, 8 bits per sample, sRGB, in L, RGB or RGBA,
    and its orientation (see :func:`orientation`)."""
    # Before loading: a PNG's iCCP after its pixels is out of place (libpng ignores it too).
    icc = im.info.get("icc_profile")
    key = im.info.get("transparency")
    scale = _LOW_BIT_GREY.get(rawmode(im.tile[0])) if im.format == "PNG" and im.tile else None
    out: Image.Image | None = decode_16bit(data, im) if im.format in ("PNG", "TIFF") else None
    if out is None:
        im.load()  # here, so a decoding error is never taken for a broken profile
        out = im
    if scale and isinstance(key, int):
        out.info["transparency"] = key * scale
    # A 16-bit PNG was loaded on another Image, whose info holds what loading found (an eXIf chunk
    # after the pixels); a TIFF's orientation is a tag of the file's own Image.
    upright = orientation(out if out is not im and im.format == "PNG" else im)
    mode = out.mode
    if mode.startswith("I;16") or mode == "I":
        return _wide_grey(out), upright
    target = "RGBA" if has_alpha(out) else ("L" if out.mode in ("1", "L") else "RGB")
    if out.mode == "LAB":
        lab = ImageCms.buildTransform(_LAB, _SRGB, "LAB", "RGB")
        out = cast(Image.Image, ImageCms.applyTransform(out, lab))  # not in place: always an image
    elif out.mode not in ("RGB", "RGBA", "CMYK", "L", target):
        out = out.convert(target)  # palette, premultiplied, YCbCr...: first to the colours a profile describes
    out = to_srgb(out, icc)
    return (out if out.mode == target else out.convert(target)), upright
