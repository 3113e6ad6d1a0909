"""Exact decoding of 16-bit samples: Pillow reads 16-bit colour by keeping
each sample's high byte; these decode the same tiles again for the low bytes
and round each full sample to 8 bits."""

from __future__ import annotations

import io
import sys
from typing import Any

import numpy as np
from PIL import Image, ImageFile


def rawmode(tile: ImageFile._Tile) -> str:
    """The raw mode a tile is decoded with (its layout and byte order: ``RGB;16B``)."""
    args = tile.args if isinstance(tile.args, tuple) else (tile.args,)
    return args[0] if args and isinstance(args[0], str) else ""


# 16-bit samples that Pillow reads by keeping each sample's high byte: the
# rawmode's layout -> the layout decoded instead (premultiplied RGBa is read
# as it is stored and unpremultiplied here, at full precision).
_WIDE = {"RGB": "RGB", "RGBX": "RGBX", "RGBA": "RGBA", "RGBa": "RGBA", "CMYK": "CMYK"}
_PLANAR_CONFIGURATION = 284  # TIFF tag
_NATIVE = "16L" if sys.byteorder == "little" else "16B"
_SWAPPED = {"16B": "16L", "16L": "16B", "16N": "16B" if sys.byteorder == "little" else "16L"}


def _reopened(data: bytes, fmt: str, rawmode: str, mode: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The first frame decoded again with every tile's rawmode replaced, and
    what loading it put in its info (a PNG's eXIf chunk may follow its pixels)."""
    with Image.open(io.BytesIO(data), formats=[fmt]) as im:
        im.tile = [
            t._replace(args=(rawmode,) + tuple(t.args[1:]) if isinstance(t.args, tuple) else rawmode) for t in im.tile
        ]
        if mode is not None:
            im._mode = mode
        im.load()
        pixels: np.ndarray = np.asarray(im)
        return pixels, im.info


def _rounded(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """round(v / 257) of each 16-bit sample v = 256 * hi + lo, with temporaries
    of at most two bytes a sample: v = 257 * hi + (lo - hi) and |lo - hi| < 257,
    so the result is hi, one more when lo - hi > 128.5, one less below -128.5."""
    d = lo.astype(np.int16) - hi
    rounded: np.ndarray = (hi + (d >= 129) - (d <= -129)).astype(np.uint8)
    return rounded


def decode_16bit(data: bytes, im: ImageFile.ImageFile) -> Image.Image | None:
    """16-bit RGB(A), CMYK and grey+alpha decoded exactly and rounded to 8
    bits, or None for other images. Pillow has no 16-bit colour modes and
    reads these by truncation; decoding the same tiles once more with the
    byte order swapped yields the low bytes (for grey+alpha, an RGBA read
    passes all four bytes through), and the two give each full sample."""
    rawmodes = {rawmode(t) for t in im.tile}
    if len(rawmodes) != 1 or getattr(im, "tag_v2", {}).get(_PLANAR_CONFIGURATION) == 2:
        # libtiff unpacks separate planes its own way, ignoring the rawmode:
        # such files keep Pillow's truncation (within one level of exact).
        return None
    layout, _, order = rawmodes.pop().partition(";")
    if order not in _SWAPPED or (layout not in _WIDE and layout != "LA"):
        return None
    fmt = im.format or ""
    if layout == "LA":
        raw, info = _reopened(data, fmt, "RGBA", "RGBA")
        big = order == "16B" or (order == "16N" and _NATIVE == "16B")
        hi, lo = (raw[..., 0::2], raw[..., 1::2]) if big else (raw[..., 1::2], raw[..., 0::2])
        mode = "LA"
    else:
        read = _WIDE[layout]
        hi, info = _reopened(data, fmt, f"{read};{order}")
        lo, _ = _reopened(data, fmt, f"{read};{_SWAPPED[order]}")
        mode = im.mode
    if layout == "RGBa":
        wide = hi.astype(np.float64) * 256 + lo
        alpha = wide[..., 3:]
        colour = np.where(alpha > 0, wide[..., :3] * 65535.0 / np.maximum(alpha, 1), 0)
        pixels = np.floor(np.concatenate([np.minimum(colour, 65535), alpha], axis=-1) / 257 + 0.5).astype(np.uint8)
    else:
        pixels = _rounded(hi, lo)
    out = Image.fromarray(pixels, mode)
    out.info.update(info)
    key = out.info.pop("transparency", None)
    if mode == "RGB" and isinstance(key, tuple) and len(key) == 3:
        # A colour key matches full 16-bit samples, not their rounded values.
        key_hi, key_lo = np.array(key, np.uint16) >> 8, np.array(key, np.uint16) & 255
        keyed = ((hi == key_hi) & (lo == key_lo)).all(axis=-1)
        out = Image.fromarray(np.dstack([pixels, np.where(keyed, 0, 255).astype(np.uint8)]), "RGBA")
        out.info.update(info)
        del out.info["transparency"]
    return out
