"""What the decoding libraries say while a job's input is decoded: Python
warnings (Pillow's "Corrupt EXIF data", ...) and libtiff's own messages are
kept for that job, on its thread, instead of going to stderr; a failure's
message then carries them."""

from __future__ import annotations

import ctypes
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from .errors import JobError, PermanentError

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


class Caught(list[str]):
    """What the libraries said, in order; ``errors`` holds libtiff's errors
    (not its warnings), which can leave a strip unread without Pillow failing."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []


def _tiff_message(module: bytes | None, fmt: bytes | None, args: int | None, error: bool = False) -> None:
    buf = ctypes.create_string_buffer(1024)
    if _vsnprintf is not None:  # set whenever this handler is installed
        _vsnprintf(buf, len(buf), fmt, args)
    text = (f"{module.decode(errors='replace')}: " if module else "") + buf.value.decode(errors="replace")
    sink = getattr(_captured, "sink", None)
    if sink is None:
        sys.stderr.write(text + "\n")
    else:
        sink.append(f"libtiff: {text}")
        if error:
            sink.errors.append(f"libtiff: {text}")


def _tiff_error(module: bytes | None, fmt: bytes | None, args: int | None) -> None:
    _tiff_message(module, fmt, args, error=True)


def _route_libtiff_messages() -> list[Any]:
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
        handlers = [_TIFF_HANDLER(_tiff_error), _TIFF_HANDLER(_tiff_message)]
        for setter, handler in zip((tiff.TIFFSetErrorHandler, tiff.TIFFSetWarningHandler), handlers, strict=True):
            setter.restype = ctypes.c_void_p
            setter.argtypes = [_TIFF_HANDLER]
            setter(handler)
        return handlers
    except (OSError, AttributeError):  # not Linux, or no libtiff: its messages stay where they were
        return []


_vsnprintf: Any = None
_TIFF_HANDLERS = _route_libtiff_messages()


@contextmanager
def caught_warnings() -> Iterator[Caught]:
    """Keep what the libraries say on this thread, for the block, in the list it gives."""
    global _print_warning
    with _hook_lock:
        if warnings.showwarning is not _show_warning:
            _print_warning, warnings.showwarning = warnings.showwarning, _show_warning
    outer = getattr(_captured, "sink", None)
    _captured.sink = Caught()
    try:
        yield _captured.sink
    finally:
        _captured.sink = outer


def with_warnings(e: JobError, caught: list[str]) -> JobError:
    """``e`` with what the libraries said while it happened."""
    if not caught:
        return e
    if e.reason == "corrupt-image" and any("support is not configured" in w for w in caught):
        # libtiff built without this file's codec (WebP, JPEG-XL, ...): no retry will help.
        e = PermanentError("unsupported-format", f"this TIFF compression is not available: {e}")
    distinct = list(dict.fromkeys(caught))
    more = f"; {len(distinct) - 5} more" if len(distinct) > 5 else ""
    return type(e)(e.reason, f"{e} (library warnings: {'; '.join(distinct[:5])}{more})")
