"""Checks of the kernels' arguments other than the image itself (_arrays.py)."""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Literal, TypeGuard, Union

import numpy as np

from . import _core

if TYPE_CHECKING:
    from PIL.Image import Resampling

# The filters are the native enum's; the Literal repeats them for type
# checkers, and tests/test_layers.py holds the two (and _core.pyi) together.
FilterName = Literal["box", "bilinear", "bicubic", "lanczos3"]
FILTERS: tuple[str, ...] = tuple(_core.Filter.__members__)
# A filter by name, or as Pillow's constant (Image.Resampling.LANCZOS).
FilterArg = Union[FilterName, "Resampling"]
# (width, height); one side None keeps the aspect ratio.
SizeArg = tuple[int, int] | tuple[int, None] | tuple[None, int]

# Each side is kept well inside the 32-bit indices of the kernels.
MAX_SIDE = 1 << 20
# Beyond this the Gaussian is flat over any image this library can hold.
MAX_SIGMA = 10_000.0
MAX_THREADS = 1024

# Pillow's resampling filters that are the same functions as ours; Pillow's
# other filters (NEAREST, HAMMING) have no counterpart here.
PILLOW_FILTERS = {"BOX": "box", "BILINEAR": "bilinear", "BICUBIC": "bicubic", "LANCZOS": "lanczos3"}


def _is_integer(v: object) -> TypeGuard[numbers.Integral]:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_size(size: object, shape: tuple[int, ...]) -> tuple[int, int]:
    """(width, height) from ``size``, the side given as None scaled with the
    other so that the image keeps its aspect ratio (rounded half up, at least 1)."""
    if not isinstance(size, (tuple, list)) or len(size) != 2 or (size[0] is None and size[1] is None):
        raise TypeError(f"size must be a (width, height) pair of integers, one of them may be None; got {size!r}")
    if not all(v is None or _is_integer(v) for v in size):
        raise TypeError(f"size must be a (width, height) pair of integers, one of them may be None; got {size!r}")
    h, w = shape[0], shape[1]
    width = int(size[0]) if size[0] is not None else math.floor(int(size[1]) * w / h + 0.5)
    height = int(size[1]) if size[1] is not None else math.floor(int(size[0]) * h / w + 0.5)
    given = [int(v) for v in size if v is not None]
    if not all(0 < v <= MAX_SIDE for v in given):
        raise ValueError(f"size must be positive and at most {MAX_SIDE} per side, got {size!r}")
    width, height = max(1, width), max(1, height)
    if not (width <= MAX_SIDE and height <= MAX_SIDE):
        raise ValueError(f"size {size!r} keeps the aspect ratio at {width}x{height}, over {MAX_SIDE} per side")
    return width, height


def check_sigma(sigma: object) -> float:
    if not isinstance(sigma, numbers.Real) or isinstance(sigma, bool):
        raise TypeError(f"sigma must be a number, got {type(sigma).__name__}")
    value = float(sigma)
    if not (math.isfinite(value) and 0.0 < value <= MAX_SIGMA):
        raise ValueError(f"sigma must be > 0 and at most {MAX_SIGMA:g}, got {sigma!r}")
    return value


def check_levels(levels: object) -> int:
    if not _is_integer(levels):
        raise TypeError(f"levels must be an integer, got {type(levels).__name__}")
    if not 2 <= int(levels) <= 256:
        raise ValueError(f"levels must be in 2..256, got {levels!r}")
    return int(levels)


def check_dither(dither: object) -> bool:
    if not isinstance(dither, (bool, np.bool_)):
        raise TypeError(f"dither must be a bool, got {type(dither).__name__}")
    return bool(dither)


def check_threads(threads: object) -> int:
    if not _is_integer(threads):
        raise TypeError(f"threads must be an integer, got {type(threads).__name__}")
    if not 0 <= int(threads) <= MAX_THREADS:
        raise ValueError(f"threads must be in 0..{MAX_THREADS} (0: one per CPU), got {threads!r}")
    return int(threads)


def check_filter(filter: object) -> _core.Filter:
    # Pillow's constants are members of the IntEnum PIL.Image.Resampling,
    # recognised by their class so that Pillow need not be imported here.
    if type(filter).__name__ == "Resampling" and type(filter).__module__.startswith("PIL"):
        pillow = str(getattr(filter, "name", filter))
        if pillow not in PILLOW_FILTERS:
            accepted = ", ".join(f"Resampling.{p}" for p in PILLOW_FILTERS)
            raise ValueError(f"filter Resampling.{pillow} has no fastimg counterpart; Pillow's {accepted} have")
        filter = PILLOW_FILTERS[pillow]
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {', '.join(FILTERS)} or Pillow's equivalent; got {filter!r}")
    return getattr(_core.Filter, str(filter))
