"""Decoding an upload into upright sRGB pixels: only by the decoder of an
accepted format, limits checked from the header, EXIF orientation, ICC
conversion, alpha. Everything that reading one input can raise leaves as a
JobError."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError

from .diagnostics import caught_warnings, with_warnings
from .errors import JobError, PermanentError, TransientError
from .limits import Limits
from .sniff import IDENTIFIABLE_FORMATS, identify
from .spec import OutputSpec, fit_inside
from .wide import decode_16bit, rawmode

log = logging.getLogger("fastimg.image.decode")

# The worker checks its own pixel limit (--max-pixels) from the header, before
# any decoding; Pillow's (a warning at 89 MP, an error quoting Pillow's number
# at 179 MP) would fire first and make a higher --max-pixels ineffective.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class Header:
    """What an input's header says, read without decoding any pixels."""

    format: str  # Pillow's format name
    width: int
    height: int
    bands: int  # channels the decoded pixels will have: 1, 3 or 4
    bytes_per_sample: int  # 2 for 16-bit inputs while they are decoded, else 1


# Pillow's error messages for a variant of an accepted format that it does not
# decode (rather than a damaged file, which may still be arriving).
_UNSUPPORTED_WORDS = (
    "unsupported",
    "not supported",
    "unknown raw mode",
    "unknown pixel mode",
    "not available",
    "unimplemented",
    "unknown image mode",
    "no decoder",
)


def _failure(e: BaseException, what: str) -> JobError:
    if isinstance(e, JobError):
        return e
    if isinstance(e, MemoryError):
        return TransientError("out-of-memory", f"out of memory while {what}")
    text = f"{type(e).__name__}: {e}" if not isinstance(e, (OSError, SyntaxError)) else str(e)
    if isinstance(e, NotImplementedError) or any(w in str(e).lower() for w in _UNSUPPORTED_WORDS):
        return PermanentError("unsupported-format", f"cannot decode this variant: {text}")
    # Often a file still being copied: retried (docs/worker.md).
    return TransientError("corrupt-image", f"cannot {what}: {text}")


def _open(data: bytes, limits: Limits) -> ImageFile.ImageFile:
    """The input opened (header only) by the decoder of its format, if that
    format is accepted; no other decoder ever sees it."""
    if not data:
        # Most often an upload still being written: retried like a truncated file.
        raise TransientError("corrupt-image", "input file is empty")
    accepted = ", ".join(limits.input_formats)
    kind = identify(data[:4096])
    if kind == "svg":
        raise PermanentError("unsupported-format", "SVG images are not rasterised by this worker")
    if kind in limits.input_formats:
        candidates = [kind]
    elif kind is not None:
        raise PermanentError("unsupported-format", f"{kind} images are not accepted (accepted: {accepted})")
    else:
        # Formats without a signature (TGA, ...) can only be tried, and only when the operator accepts them.
        candidates = [f for f in limits.input_formats if f not in IDENTIFIABLE_FORMATS]
        if not candidates:
            raise PermanentError("unsupported-format", f"not an image in an accepted format ({accepted})")
    pillow = [name.upper() for name in candidates]
    try:
        im = Image.open(io.BytesIO(data), formats=pillow)
    except UnidentifiedImageError:
        if kind is None:
            raise PermanentError("unsupported-format", f"not an image in an accepted format ({accepted})") from None
        raise _header_failure(data, kind, pillow) from None
    except Exception as e:  # noqa: BLE001 - any failure to read a header is this input's failure
        raise _failure(e, "read the image header") from None
    return im


def _header_failure(data: bytes, kind: str, pillow: Sequence[str]) -> JobError:
    """Why the decoder of a file's own format refused its header: Image.open
    only says that no decoder took it."""
    for fmt in pillow:
        try:
            opener: Any = Image.OPEN[fmt][0]  # an ImageFile subclass: its constructor reads the header
            opener(io.BytesIO(data)).close()
        except Exception as e:  # noqa: BLE001
            return _failure(e, f"read the {kind} header")
    return TransientError("corrupt-image", f"cannot read the {kind} header")


def _check_header(im: ImageFile.ImageFile, limits: Limits) -> None:
    if im.mode == "F":
        raise PermanentError("unsupported-format", "floating-point samples have no defined display range")
    _check_size(*im.size, limits)


def _check_size(width: int, height: int, limits: Limits) -> None:
    if width < 1 or height < 1:
        raise TransientError("corrupt-image", f"image header gives no pixels ({width}x{height})")
    from .. import _kernels  # the kernels' limit, read here: importing the decoder loads no native module

    if max(width, height) > _kernels.MAX_SIDE:
        raise PermanentError(
            "too-large", f"image is {width}x{height} pixels; the longest side taken is {_kernels.MAX_SIDE}"
        )
    if width * height > limits.max_pixels:
        raise PermanentError("too-large", f"image is {width}x{height} pixels, limit {limits.max_pixels}")


_GREY = ("1", "L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I;16BS")


def _has_alpha(im: Image.Image) -> bool:
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return True
    if "transparency" in im.info:
        return True
    palette = im.palette if im.mode == "P" else None
    return palette is not None and palette.mode == "RGBA"


def header(data: bytes, limits: Limits = Limits()) -> Header:
    """The input's header, with the same format, size and side checks as
    :func:`decode`, which raises the same JobError for a file it cannot open."""
    with caught_warnings() as caught:
        try:
            im = _open(data, limits)
            with im:
                _check_header(im, limits)
                width, height = im.size
                wide = im.mode.startswith("I") or any(";16" in rawmode(t) for t in im.tile[:1])
                bands = 4 if _has_alpha(im) else (1 if im.mode in _GREY else 3)
                return Header(im.format or "", width, height, bands, 2 if wide else 1)
        except Exception as e:  # noqa: BLE001 - every failure is this input's
            raise with_warnings(_failure(e, "read the image header"), caught) from None


_SRGB = ImageCms.createProfile("sRGB")
_LAB = ImageCms.createProfile("LAB")


def _to_srgb(im: Image.Image, icc: bytes | None) -> Image.Image:
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


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def _frames(im: Image.Image) -> int | None:
    """How many frames (pages) the file has, or None when the chain of frames
    is damaged after the first: Pillow walks it and raises anything there."""
    try:
        return int(getattr(im, "n_frames", 1))
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001
        return None


def _pixels(im: ImageFile.ImageFile, data: bytes) -> Image.Image:
    """The first frame loaded, 8 bits per sample, sRGB, in L, RGB or RGBA."""
    # Before loading: a PNG's iCCP after its pixels is out of place (libpng ignores it too).
    icc = im.info.get("icc_profile")
    out: Image.Image | None = decode_16bit(data, im) if im.format in ("PNG", "TIFF") else None
    if out is None:
        im.load()  # here, so a decoding error is never taken for a broken profile
        out = im
    mode = out.mode
    if mode.startswith("I;16") or mode == "I":
        grey = np.asarray(out)
        key = out.info.get("transparency")
        rounded = np.clip(np.floor(grey.astype(np.float64) / 257 + 0.5), 0, 255).astype(np.uint8)
        if isinstance(key, int):
            return Image.fromarray(
                np.dstack([rounded, rounded, rounded, np.where(grey == key, 0, 255).astype(np.uint8)]), "RGBA"
            )
        return Image.fromarray(rounded, "L")
    target = "RGBA" if _has_alpha(out) else ("L" if out.mode in ("1", "L") else "RGB")
    if out.mode == "LAB":
        lab = ImageCms.buildTransform(_LAB, _SRGB, "LAB", "RGB")
        out = cast(Image.Image, ImageCms.applyTransform(out, lab))  # not in place: always an image
    elif out.mode not in ("RGB", "RGBA", "CMYK", "L", target):
        out = out.convert(target)  # palette, premultiplied, YCbCr...: first to the colours a profile describes
    out = _to_srgb(out, icc)
    return out if out.mode == target else out.convert(target)


def decode(data: bytes, specs: Sequence[OutputSpec], limits: Limits = Limits()) -> np.ndarray:
    """Decoded, upright, sRGB pixels: (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA.
    Raises JobError, and nothing else, for any input."""
    with caught_warnings() as caught:
        try:
            pixels = _decode(data, specs, limits)
        except Exception as e:  # noqa: BLE001 - every failure is this input's
            raise with_warnings(_failure(e, "decode the image"), caught) from None
        if caught:
            log.debug("library warnings while decoding: %s", "; ".join(caught))
        return pixels


def _decode(data: bytes, specs: Sequence[OutputSpec], limits: Limits) -> np.ndarray:
    im = _open(data, limits)
    _check_header(im, limits)
    frames = _frames(im)
    if frames is None:
        # Only the first frame is used, and the walk that failed already cost
        # what a frame limit bounds; it left the file mid-chain, so reopen.
        im.close()
        im = _open(data, limits)
    elif frames > limits.max_frames:
        im.close()
        raise PermanentError("too-large", f"image has {frames} frames, limit {limits.max_frames}")
    with im:
        width, height = im.size
        # Decode in one call, not one per 64 KiB: Pillow takes the GIL back
        # between calls, and with another thread busy in Python each
        # return can wait a whole switch interval (a 12 MP decode went
        # from 43 to 266 ms next to a spinning thread; 57 ms with this).
        im.decodermaxblock = min(max(len(data), 65536), 16 << 20)
        orientation = 1
        if im.format in ("JPEG", "MPO"):
            orientation = im.getexif().get(0x0112, 1)
            # Shrink-on-load: decode at the smallest DCT scale that still
            # covers every output, sized in the stored orientation.
            swap = orientation in _TRANSPOSED
            sizes = [fit_inside(width, height, *((s.height, s.width) if swap else (s.width, s.height))) for s in specs]
            im.draft(im.mode if im.mode in ("RGB", "L") else None, (max(w for w, _ in sizes), max(h for _, h in sizes)))
        out = _pixels(im, data)
        if im.format not in ("JPEG", "MPO"):
            # After loading: a PNG's eXIf chunk may follow its pixels, and a
            # 16-bit PNG was loaded on another Image (whose info ``out`` has).
            orientation = (out if im.format == "PNG" else im).getexif().get(0x0112, 1)
        if orientation in _TRANSPOSE:
            out = out.transpose(_TRANSPOSE[orientation])
        return np.asarray(out)
