"""Decoding an upload into upright sRGB pixels: format checks, limits from the
header, EXIF orientation, ICC conversion, 16-bit rounding, alpha."""

from __future__ import annotations

import io
import sys
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .errors import PermanentError, TransientError
from .limits import Limits
from .outputs import OutputSpec
from .render import fit_inside
from .sniff import detect_image_type

@dataclass(frozen=True)
class Header:
    """What an input's header says, read without decoding any pixels."""

    format: str  # Pillow's format name
    width: int
    height: int
    bands: int  # channels the decoded pixels will have: 1, 3 or 4
    bytes_per_sample: int  # 2 for 16-bit inputs while they are decoded, else 1


def header(data: bytes) -> Header:
    """The input's header. Raises the same JobError as :func:`decode` would for
    a file it cannot open."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                mode, (width, height), fmt = im.mode, im.size, im.format or ""
                alpha = _has_alpha(im)
                tile = str(im.tile[:1])
    except UnidentifiedImageError:
        raise PermanentError("unsupported-format", "not an image format this worker can read") from None
    except Image.DecompressionBombError as e:
        raise PermanentError("too-large", str(e)) from None
    except Exception as e:  # noqa: BLE001 - any failure to read a header is this input's failure
        raise TransientError("corrupt-image", f"cannot read image header: {type(e).__name__}: {e}") from None
    bands = 4 if alpha else (1 if mode in ("1", "L", "P;1", "I", "I;16", "I;16L", "I;16B", "F") else 3)
    wide = mode.startswith("I") or mode == "F" or ";16" in tile
    return Header(fmt, width, height, bands, 2 if wide else 1)


_SRGB = ImageCms.createProfile("sRGB")


def _to_srgb(im: Image.Image) -> Image.Image:
    icc = im.info.get("icc_profile")
    # A grey profile changes tone only, and sRGB has no grey space to map it to.
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK"):
        return im
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(im, src, _SRGB, outputMode="RGBA" if im.mode == "RGBA" else "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return im  # a broken profile is ignored, as browsers do


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_SWAPPED_ORDER = {"16B": "16L", "16L": "16B", "16N": "16B" if sys.byteorder == "little" else "16L"}


def _rounded_16bit(data: bytes, im: Image.Image) -> Image.Image:
    """16-bit RGB(A) rounded to 8 bits. Pillow reads such files by keeping each
    sample's high byte (truncation); decoding once more with the byte order
    swapped yields the low bytes, and the two give the full value."""
    if len(im.tile) != 1 or im.mode not in ("RGB", "RGBA"):
        return im
    tile = im.tile[0]
    args = tile.args if isinstance(tile.args, tuple) else (tile.args,)
    rawmode = args[0] if args and isinstance(args[0], str) else ""
    order = rawmode[-3:]
    if order not in _SWAPPED_ORDER:
        return im
    low = Image.open(io.BytesIO(data))
    swapped = rawmode[:-3] + _SWAPPED_ORDER[order]
    new_args = (swapped,) + args[1:] if isinstance(tile.args, tuple) else swapped
    low.tile = [tile._replace(args=new_args)]
    low.load()
    im.load()
    if order == "16N":  # the native read gave low bytes on a little-endian machine: swap roles
        im, low = low, im
    wide = np.asarray(im, dtype=np.uint32) * 256 + np.asarray(low, dtype=np.uint32)
    out = Image.fromarray(((wide * 2 + 257) // 514).astype(np.uint8), im.mode)
    out.info.update(im.info)
    return out


def decode(data: bytes, specs: Sequence[OutputSpec], limits: Limits) -> np.ndarray:
    """Decoded, upright, sRGB pixels: (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA."""
    if not data:
        # Most often an upload still being written: retried like a truncated file.
        raise TransientError("corrupt-image", "input file is empty")
    if detect_image_type(data[:4096]) == "svg":
        raise PermanentError("unsupported-format", "SVG images are not rasterised by this worker")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit is checked below, from the header.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            # Decode in one call, not one per 64 KiB: Pillow takes the GIL back
            # between calls, and with another thread busy in Python each
            # return can wait a whole switch interval (a 12 MP decode went
            # from 43 to 266 ms next to a spinning thread; 57 ms with this).
            im.decodermaxblock = min(max(len(data), 65536), 16 << 20)
            width, height = im.size
            if width * height > limits.max_pixels:
                raise PermanentError(
                    "too-large", f"image is {width}x{height} pixels, limit {limits.max_pixels}"
                )
            frames = getattr(im, "n_frames", 1)
            if frames > limits.max_frames:
                raise PermanentError("too-large", f"image has {frames} frames, limit {limits.max_frames}")
            im.seek(0)
            if im.format in ("PNG", "TIFF"):
                im = _rounded_16bit(data, im)  # before getexif(), which loads a PNG
            orientation = im.getexif().get(0x0112, 1)
            if im.format == "JPEG":
                # Shrink-on-load: decode at the smallest DCT scale that still
                # covers every output, sized in the stored orientation.
                swap = orientation in _TRANSPOSED
                sizes = [fit_inside(width, height, *((s.height, s.width) if swap else (s.width, s.height)))
                         for s in specs]
                im.draft(im.mode if im.mode in ("RGB", "L") else None,
                         (max(w for w, _ in sizes), max(h for _, h in sizes)))
            if orientation in range(2, 9):
                im = ImageOps.exif_transpose(im)  # a copy, so only when it turns something
            im = _to_srgb(im)
            if im.mode in ("I;16", "I;16L", "I;16B", "I"):
                # 16-bit grey: round to 8 bits rather than clip.
                wide = np.asarray(im, dtype=np.float64)
                return np.clip(np.floor(wide / 257.0 + 0.5), 0, 255).astype(np.uint8)
            mode = "RGBA" if _has_alpha(im) else ("L" if im.mode == "L" else "RGB")
            if im.mode != mode:  # convert() copies even when the mode is already right
                im = im.convert(mode)
            return np.asarray(im)
    except PermanentError:
        raise
    except UnidentifiedImageError:
        raise PermanentError("unsupported-format", "not an image format this worker can read") from None
    except Image.DecompressionBombError as e:
        raise PermanentError("too-large", str(e)) from None
    except MemoryError:
        raise TransientError("out-of-memory", "out of memory while decoding") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # Often a file still being copied: retried (docs/worker.md).
        raise TransientError("corrupt-image", f"cannot decode image: {e}") from None
