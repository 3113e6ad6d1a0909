"""Decoding an upload into upright sRGB pixels: only by the decoder of an
accepted format, limits checked from the header, EXIF orientation, ICC
conversion, alpha. Everything that reading one input can raise leaves as a
JobError."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import IcnsImagePlugin, IcoImagePlugin, Image, ImageFile, UnidentifiedImageError

from . import pixels, svg
from .damage import damage
from .diagnostics import Caught, caught_warnings, with_warnings
from .errors import JobError, PermanentError, TransientError
from .limits import Limits
from .pixels import bands
from .sniff import IDENTIFIABLE_FORMATS, identify, incomplete_signature
from .spec import MAX_OUTPUT_SIDE, OutputSpec, fit_inside
from .turbo import decode_jpeg
from .wide import rawmode

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
    partial = incomplete_signature(data)
    if partial:
        raise TransientError("corrupt-image", f"input ends after {len(data)} bytes, inside a {partial} signature")
    accepted = ", ".join(limits.input_formats)
    kind = identify(data[:4096])
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


def header(data: bytes, limits: Limits = Limits()) -> Header:
    """The input's header, with the same format, size and side checks as
    :func:`decode`, which raises the same JobError for a file it cannot open."""
    if _is_svg(data, limits):
        width, height = (max(1, round(v)) for v in svg.intrinsic_size(data))
        return Header("SVG", *fit_inside(width, height, MAX_OUTPUT_SIDE, MAX_OUTPUT_SIDE), 4, 1)
    with caught_warnings() as caught:
        try:
            im = _open(data, limits)
            with im:
                _check_header(im, limits)
                width, height = im.size
                wide = im.mode.startswith("I") or any(";16" in rawmode(t) for t in im.tile[:1])
                return Header(im.format or "", width, height, bands(im), 2 if wide else 1)
        except Exception as e:  # noqa: BLE001 - every failure is this input's
            raise with_warnings(_failure(e, "read the image header"), caught) from None


# Sub-images a container decodes with another format's decoder: (Pillow's
# signature check, the formats tried). Their own headers give their size.
_EMBEDDED = ((b"\x89PNG\r\n\x1a\n", ["PNG"]), (b"\xffO\xffQ", ["JPEG2000"]), (b"\x00\x00\x00\x0cjP  ", ["JPEG2000"]))


def _check_embedded(im: ImageFile.ImageFile, data: bytes, limits: Limits) -> None:
    """The size limits applied to the images an ICNS or ICO file embeds: its
    own header may claim 256x256 while a JPEG 2000 inside claims gigapixels."""
    spans: list[tuple[int, int]] = []
    if isinstance(im, IcnsImagePlugin.IcnsImageFile):
        spans = list(im.icns.dct.values())
    elif isinstance(im, IcoImagePlugin.IcoImageFile):  # CUR files are opened by a subclass
        spans = [(e.offset, e.size) for e in im.ico.entry]
    for start, length in spans:
        part = data[start : start + length]
        formats = next((f for sig, f in _EMBEDDED if part.startswith(sig)), None)
        if formats is not None:
            with Image.open(io.BytesIO(part), formats=formats) as sub:
                width, height = sub.size
            _check_size(width, height, limits)


def _frames(im: Image.Image) -> int | None:
    """How many frames (pages) the file has, or None when the chain of frames
    is damaged after the first: Pillow walks it and raises anything there."""
    try:
        return int(getattr(im, "n_frames", 1))
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001
        return None


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # see decode
    damage: str | None = None  # with keep_partial: why some of the pixels are missing


def decode(data: bytes, specs: Sequence[OutputSpec], limits: Limits = Limits()) -> np.ndarray:
    """Decoded, upright, sRGB pixels: (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA.
    Raises JobError, and nothing else, for any input; damaged image data is
    ``corrupt-image``."""
    return decode_image(data, specs, limits).pixels


def decode_image(
    data: bytes, specs: Sequence[OutputSpec], limits: Limits = Limits(), keep_partial: bool = False
) -> Decoded:
    """As :func:`decode`; with ``keep_partial``, image data that its decoder
    recovers from (cut short, corrupt) gives what was decoded, and why."""
    with caught_warnings() as caught:
        try:
            decoded = _svg(data, specs) if _is_svg(data, limits) else _decode(data, specs, limits, keep_partial, caught)
        except Exception as e:  # noqa: BLE001 - every failure is this input's
            raise with_warnings(_failure(e, "decode the image"), caught) from None
        if caught:
            log.debug("library warnings while decoding: %s", "; ".join(caught))
        return decoded


def _is_svg(data: bytes, limits: Limits) -> bool:
    """An SVG to render: drawn at the size of the largest output, never decoded by Pillow."""
    return "svg" in limits.input_formats and identify(data[:4096]) == "svg"


def _svg(data: bytes, specs: Sequence[OutputSpec]) -> Decoded:
    width, height = (max(1, round(v)) for v in svg.intrinsic_size(data))
    sizes = [fit_inside(width, height, s.width, s.height) for s in specs]
    return Decoded(svg.render(data, max(w for w, _ in sizes), max(h for _, h in sizes)))


def _damaged(reason: str | None, keep_partial: bool) -> str | None:
    if reason and not keep_partial:
        raise TransientError("corrupt-image", f"damaged image data: {reason}")
    return reason


def _decode(data: bytes, specs: Sequence[OutputSpec], limits: Limits, keep_partial: bool, caught: Caught) -> Decoded:
    im = _open(data, limits)
    _check_header(im, limits)
    _check_embedded(im, data, limits)
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
        if im.format in ("JPEG", "MPO") and im.mode in ("RGB", "L"):
            turbo = decode_jpeg(im, data, specs, keep_partial)
            if turbo is not None:
                return Decoded(*turbo)
        reason = _damaged(damage(data, im), keep_partial)
        width, height = im.size
        if "decodermaxblock" not in vars(im):  # FLI bounds each frame's read by its own size: kept
            # Decode in one call, not one per 64 KiB: Pillow takes the GIL back
            # between calls, and with another thread busy in Python each
            # return can wait a whole switch interval (a 12 MP decode went
            # from 43 to 266 ms next to a spinning thread; 57 ms with this).
            im.decodermaxblock = min(max(len(data), 65536), 16 << 20)
        if im.format in ("JPEG", "MPO"):
            # Shrink-on-load: decode at the smallest DCT scale that still
            # covers every output, sized in the stored orientation.
            swap = pixels.orientation(im) in pixels.TRANSPOSED
            sizes = [fit_inside(width, height, *((s.height, s.width) if swap else (s.width, s.height))) for s in specs]
            im.draft(im.mode if im.mode in ("RGB", "L") else None, (max(w for w, _ in sizes), max(h for _, h in sizes)))
        errors = len(caught.errors)
        out, upright = pixels.load_pixels(im, data)
        if reason is None and len(caught.errors) > errors:
            reason = _damaged(caught.errors[errors], keep_partial)  # libtiff's, for a strip it could not read
        if upright in pixels.TRANSPOSE:
            out = out.transpose(pixels.TRANSPOSE[upright])
        return Decoded(np.asarray(out), reason)
