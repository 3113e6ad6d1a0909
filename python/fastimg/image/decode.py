"""Decoding an upload into upright sRGB pixels: the accepted formats, limits
from the header, EXIF orientation, ICC conversion, exact 16-bit rounding,
alpha. Everything that reading one input can raise leaves as a JobError."""

from __future__ import annotations

import ctypes
import io
import logging
import sys
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO, cast

import numpy as np
from PIL import EpsImagePlugin, Image, ImageCms, ImageFile

from .._kernels import MAX_SIDE
from .errors import JobError, PermanentError, TransientError
from .limits import Limits
from .outputs import OutputSpec
from .render import fit_inside
from .sniff import SIGNED_FORMATS, identify

log = logging.getLogger("fastimg.image.decode")

# The worker checks its own pixel limit (--max-pixels) from the header, before
# any decoding; Pillow's (a warning at 89 MP, an error quoting Pillow's number
# at 179 MP) would fire first and make a higher --max-pixels ineffective.
Image.MAX_IMAGE_PIXELS = None

Image.init()
# Accepted-format names are Pillow's format names in lower case. ("jpeg" also
# covers camera JPEGs with an MPF index, which Pillow's JPEG decoder opens as MPO.)
_NEVER = {
    "svg": "SVG is never rasterised by this worker",
    "dib": "headerless BMP has no signature to tell it from other data",
    "iptc": "not an image format",
    "mpeg": "not an image format",
}


def _cannot_decode_here(name: str) -> str | None:
    """Why this installation cannot decode format ``name``, or None when it can."""
    if name in _NEVER:
        return _NEVER[name]
    if name.upper() not in Image.OPEN:
        return "not a format Pillow reads"
    factory = Image.OPEN[name.upper()][0]
    if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
        return "Pillow only identifies it; no decoder is installed"
    if name == "eps" and not EpsImagePlugin.has_ghostscript():
        return "Ghostscript is not installed"
    return None


# What --input-formats may list in this installation.
FORMAT_NAMES: tuple[str, ...] = tuple(sorted(n for n in (f.lower() for f in Image.OPEN) if not _cannot_decode_here(n)))


def parse_formats(text: str) -> tuple[str, ...]:
    """The accepted formats from a comma-separated list of names (jpeg, png,
    tiff, avif, ...); ValueError naming what is wrong."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    if not names:
        raise ValueError("no formats given")
    for name in names:
        why = _cannot_decode_here(name)
        if why:
            raise ValueError(f"format {name!r} cannot be accepted: {why} (possible: {', '.join(FORMAT_NAMES)})")
    return names


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


# Library warnings (Pillow's "Corrupt EXIF data", ...) raised while this thread
# decodes are kept for the job instead of being printed on stderr.
_captured = threading.local()
_hook_lock = threading.Lock()
_print_warning = warnings.showwarning


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    sink = getattr(_captured, "sink", None)
    if sink is None:
        _print_warning(message, category, filename, lineno, file, line)
    else:
        sink.append(f"{category.__name__}: {message}")


# libtiff prints its errors and warnings on stderr itself ("Fax4Decode: Bad code
# word ...") unless given handlers; Pillow gives none. These route them to the
# same place, formatted by the C library's vsnprintf (the va_list arrives as a
# pointer on x86-64 and arm64 alike).
_TIFF_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)


def _tiff_message(module: bytes | None, fmt: bytes | None, args: int | None) -> None:
    buf = ctypes.create_string_buffer(1024)
    if _vsnprintf is not None:  # set whenever this handler is installed
        _vsnprintf(buf, len(buf), fmt, args)
    text = (f"{module.decode(errors='replace')}: " if module else "") + buf.value.decode(errors="replace")
    sink = getattr(_captured, "sink", None)
    if sink is None:
        sys.stderr.write(text + "\n")
    else:
        sink.append(f"libtiff: {text}")


def _route_libtiff_messages() -> list:
    """Install the handlers in the libtiff Pillow loaded; the callbacks it
    keeps are returned so that they live as long as the module."""
    try:
        import PIL._imaging  # noqa: F401 - loads libtiff when Pillow has it

        with open("/proc/self/maps") as maps:
            path = next((line.split()[-1] for line in maps if "/libtiff" in line), None)
        if path is None:
            return []
        tiff, libc = ctypes.CDLL(path), ctypes.CDLL(None)
        global _vsnprintf
        _vsnprintf = libc.vsnprintf
        _vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        handler = _TIFF_HANDLER(_tiff_message)
        for setter in (tiff.TIFFSetErrorHandler, tiff.TIFFSetWarningHandler):
            setter.restype = ctypes.c_void_p
            setter.argtypes = [_TIFF_HANDLER]
            setter(handler)
        return [handler]
    except (OSError, AttributeError):  # not Linux, or no libtiff: its messages stay where they were
        return []


_vsnprintf: Any = None
_TIFF_HANDLERS = _route_libtiff_messages()


class _Warnings:
    def __enter__(self) -> list[str]:
        global _print_warning
        with _hook_lock:
            if warnings.showwarning is not _show_warning:
                _print_warning, warnings.showwarning = warnings.showwarning, _show_warning
        self.outer = getattr(_captured, "sink", None)
        _captured.sink = []
        return _captured.sink

    def __exit__(self, *exc: object) -> None:
        _captured.sink = self.outer


def _with_warnings(e: JobError, caught: list[str]) -> JobError:
    if not caught:
        return e
    if e.reason == "corrupt-image" and any("support is not configured" in w for w in caught):
        # libtiff built without this file's codec (WebP, JPEG-XL, ...): no retry will help.
        e = PermanentError("unsupported-format", f"this TIFF compression is not available: {e}")
    distinct = list(dict.fromkeys(caught))
    more = f"; {len(distinct) - 5} more" if len(distinct) > 5 else ""
    return type(e)(e.reason, f"{e} (library warnings: {'; '.join(distinct[:5])}{more})")


def _open(data: bytes, limits: Limits) -> ImageFile.ImageFile:
    """The input opened (header only) by the decoder of its format, if that
    format is accepted; no other decoder ever sees it."""
    if not data:
        # Most often an upload still being written: retried like a truncated file.
        raise TransientError("corrupt-image", "input file is empty")
    accepted = ", ".join(limits.formats)
    kind = identify(data[:4096])
    if kind == "svg":
        raise PermanentError("unsupported-format", "SVG images are not rasterised by this worker")
    if kind in limits.formats:
        candidates = [kind]
    elif kind is not None:
        raise PermanentError("unsupported-format", f"{kind} images are not accepted (accepted: {accepted})")
    else:
        # Formats without a signature (TGA, ...) can only be tried, and only when the operator accepts them.
        candidates = [f for f in limits.formats if f not in SIGNED_FORMATS]
        if not candidates:
            raise PermanentError("unsupported-format", f"not an image in an accepted format ({accepted})")
    pillow = [name.upper() for name in candidates]
    try:
        im = Image.open(io.BytesIO(data), formats=pillow)
    except Image.UnidentifiedImageError:
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
    if max(width, height) > MAX_SIDE:
        raise PermanentError("too-large", f"image is {width}x{height} pixels; the longest side taken is {MAX_SIDE}")
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
    with _Warnings() as caught:
        try:
            im = _open(data, limits)
            with im:
                _check_header(im, limits)
                width, height = im.size
                wide = im.mode.startswith("I") or any(";16" in _rawmode(t) for t in im.tile[:1])
                bands = 4 if _has_alpha(im) else (1 if im.mode in _GREY else 3)
                return Header(im.format or "", width, height, bands, 2 if wide else 1)
        except Exception as e:  # noqa: BLE001 - every failure is this input's
            raise _with_warnings(_failure(e, "read the image header"), caught) from None


def _rawmode(tile: ImageFile._Tile) -> str:
    args = tile.args if isinstance(tile.args, tuple) else (tile.args,)
    return args[0] if args and isinstance(args[0], str) else ""


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

# 16-bit samples that Pillow reads by keeping each sample's high byte: the
# rawmode's layout -> the layout decoded instead (premultiplied RGBa is read
# as it is stored and unpremultiplied here, at full precision).
_WIDE = {"RGB": "RGB", "RGBX": "RGBX", "RGBA": "RGBA", "RGBa": "RGBA", "CMYK": "CMYK"}
_PLANAR_CONFIGURATION = 284  # TIFF tag
_NATIVE = "16L" if sys.byteorder == "little" else "16B"
_SWAPPED = {"16B": "16L", "16L": "16B", "16N": "16B" if sys.byteorder == "little" else "16L"}


def _reopened(data: bytes, fmt: str, rawmode: str, mode: str | None = None) -> tuple[np.ndarray, dict]:
    """The first frame decoded again with every tile's rawmode replaced, and
    what loading it put in its info (a PNG's eXIf chunk may follow its pixels)."""
    with Image.open(io.BytesIO(data), formats=[fmt]) as im:
        im.tile = [
            t._replace(args=(rawmode,) + tuple(t.args[1:]) if isinstance(t.args, tuple) else rawmode) for t in im.tile
        ]
        if mode is not None:
            im._mode = mode
        im.load()
        return np.asarray(im), im.info


def _rounded(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """round(v / 257) of each 16-bit sample v = 256 * hi + lo, with temporaries
    of at most two bytes a sample: v = 257 * hi + (lo - hi) and |lo - hi| < 257,
    so the result is hi, one more when lo - hi > 128.5, one less below -128.5."""
    d = lo.astype(np.int16) - hi
    return (hi + (d >= 129) - (d <= -129)).astype(np.uint8)


def _decode_16bit(data: bytes, im: ImageFile.ImageFile) -> Image.Image | None:
    """16-bit RGB(A), CMYK and grey+alpha decoded exactly and rounded to 8
    bits, or None for other images. Pillow has no 16-bit colour modes and
    reads these by truncation; decoding the same tiles once more with the
    byte order swapped yields the low bytes (for grey+alpha, an RGBA read
    passes all four bytes through), and the two give each full sample."""
    rawmodes = {_rawmode(t) for t in im.tile}
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
    out: Image.Image | None = _decode_16bit(data, im) if im.format in ("PNG", "TIFF") else None
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
    with _Warnings() as caught:
        try:
            pixels = _decode(data, specs, limits)
        except Exception as e:  # noqa: BLE001 - every failure is this input's
            raise _with_warnings(_failure(e, "decode the image"), caught) from None
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
