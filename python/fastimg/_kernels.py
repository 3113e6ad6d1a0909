"""Argument checking and dispatch for the native kernels in ``_core``."""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import _core

BackendName = Literal["cpu", "cuda"]
# The filters are the native enum's; the Literal repeats them for type
# checkers, and tests/test_layers.py holds the two (and _core.pyi) together.
FilterName = Literal["box", "bilinear", "bicubic", "lanczos3"]
FILTERS: tuple[str, ...] = tuple(_core.Filter.__members__)

# Each side is kept well inside the 32-bit indices of the kernels.
MAX_SIDE = 1 << 20
# Beyond this the Gaussian is flat over any image this library can hold.
MAX_SIGMA = 10_000.0
MAX_THREADS = 1024


class BackendUnavailableError(RuntimeError):
    """A backend was asked for by name but cannot run on this machine."""


# The kernels' own errors, raised by the native module (docs/kernels.md):
# KernelError (a RuntimeError) for any CUDA failure; its subclass
# DeviceOutOfMemory (also a MemoryError) when the GPU is out of memory, which
# is transient; its subclass DeviceLost for a sticky error, after which this
# process no longer uses CUDA and ``backend=None`` means the CPU.
KernelError = _core.KernelError
DeviceOutOfMemory = _core.DeviceOutOfMemory
DeviceLost = _core.DeviceLost


@dataclass(frozen=True)
class Backends:
    """What :func:`backends` reports.

    ``available`` lists the usable backends, best first; ``default`` is what
    ``backend=None`` picks. ``cuda_reason`` says why CUDA is not in use (built
    without it, no driver, no device, no kernel image for the device, or a
    sticky error since start) and is ``None`` when it is. ``cuda_lost`` is true
    once a sticky error has taken CUDA out of use in this process.
    ``cpu_target`` is the instruction set the CPU kernels run on:
    ``"x86-64-v4"`` (AVX-512), ``"x86-64-v3"`` (AVX2) or ``"baseline"``; the
    environment variable ``FASTIMG_CPU_TARGET`` caps it.
    """

    available: tuple[str, ...]
    default: str
    cuda_compiled: bool
    cuda_device: str | None
    cuda_reason: str | None
    cuda_lost: bool = False
    cpu_target: str = ""

    def describe(self) -> str:
        """One line for logs: the backend in use and, for the CPU, why."""
        if self.default == "cuda":
            return f"CUDA on {self.cuda_device}"
        return f"CPU, {self.cpu_target} (CUDA not in use: {self.cuda_reason})"


def backends() -> Backends:
    """Report the available kernel backends.

    CUDA is probed once per process (a device, then a kernel launch checked on
    the host); after a :class:`DeviceLost` the report switches to the CPU.
    """
    return _backends(_core.cuda_lost())


@functools.cache
def _backends(lost: bool) -> Backends:
    status = _core.cuda_status()
    cpu = _core.cpu_target()
    if status["available"]:
        return Backends(("cuda", "cpu"), "cuda", True, status["device"], None, cpu_target=cpu)
    device = status["device"] or None
    return Backends(("cpu",), "cpu", bool(status["compiled"]), device, status["reason"], bool(status["lost"]), cpu)


def _backend(backend: str | None) -> _core.Backend:
    info = backends()
    if backend is None:
        backend = info.default
    if backend not in ("cpu", "cuda"):
        raise ValueError(f"backend must be None, 'cpu' or 'cuda', got {backend!r}")
    if backend not in info.available:
        raise BackendUnavailableError(f"backend 'cuda' is not available: {info.cuda_reason}")
    return getattr(_core.Backend, backend)


def _check_image(img: object, name: str = "img") -> np.ndarray:
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8, got {img.dtype}")
    if img.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (H, W) or (H, W, C), got {img.shape}")
    if img.ndim == 3 and img.shape[2] not in (1, 3, 4):
        raise ValueError(f"{name} must have 1, 3 or 4 channels, got {img.shape[2]}")
    if not (0 < img.shape[0] <= MAX_SIDE and 0 < img.shape[1] <= MAX_SIDE):
        raise ValueError(f"{name} height and width must be in 1..{MAX_SIDE}, got {img.shape[:2]}")
    # Views (slices, transposes) are valid input; the kernels read packed rows.
    return np.ascontiguousarray(img)


def _check_size(size: object) -> tuple[int, int]:
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in size)
    ):
        raise TypeError(f"size must be a (width, height) pair of integers, got {size!r}")
    width, height = int(size[0]), int(size[1])
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise ValueError(f"size must be positive and at most {MAX_SIDE} per side, got {size!r}")
    return width, height


def _check_sigma(sigma: object) -> float:
    if not isinstance(sigma, numbers.Real) or isinstance(sigma, bool):
        raise TypeError(f"sigma must be a number, got {type(sigma).__name__}")
    value = float(sigma)
    if not (math.isfinite(value) and 0.0 < value <= MAX_SIGMA):
        raise ValueError(f"sigma must be > 0 and at most {MAX_SIGMA:g}, got {sigma!r}")
    return value


def _check_levels(levels: object) -> int:
    if not isinstance(levels, numbers.Integral) or isinstance(levels, bool):
        raise TypeError(f"levels must be an integer, got {type(levels).__name__}")
    if not 2 <= int(levels) <= 256:
        raise ValueError(f"levels must be in 2..256, got {levels!r}")
    return int(levels)


def _check_threads(threads: object) -> int:
    if not isinstance(threads, numbers.Integral) or isinstance(threads, bool):
        raise TypeError(f"threads must be an integer, got {type(threads).__name__}")
    if not 0 <= int(threads) <= MAX_THREADS:
        raise ValueError(f"threads must be in 0..{MAX_THREADS} (0: one per CPU), got {threads!r}")
    return int(threads)


def _check_filter(filter: object) -> _core.Filter:
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {', '.join(FILTERS)}; got {filter!r}")
    return getattr(_core.Filter, str(filter))


def _output(out: np.ndarray | None, shape: tuple[int, ...], src: np.ndarray) -> np.ndarray:
    if out is None:
        return np.empty(shape, np.uint8)
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8:
        raise TypeError("out must be a numpy.ndarray of dtype uint8")
    if out.shape != shape:
        raise ValueError(f"out must have shape {shape}, got {out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be C-contiguous and writeable")
    if np.shares_memory(out, src):
        raise ValueError("out must not overlap img")
    return out


def _resized_shape(img: np.ndarray, width: int, height: int) -> tuple[int, ...]:
    return (height, width) + img.shape[2:]


def resize(
    img: np.ndarray,
    size: tuple[int, int],
    *,
    filter: FilterName = "lanczos3",
    backend: BackendName | None = None,
    out: np.ndarray | None = None,
    threads: int = 1,
) -> np.ndarray:
    """Resample ``img`` to ``size`` = (width, height), antialiased.

    ``img`` is uint8, shaped (H, W) or (H, W, C) with C in 1, 3, 4 (4 means RGBA
    with straight alpha, resampled premultiplied). Returns uint8 shaped
    (height, width) or (height, width, C); ``out`` may be given to write into.
    Filters follow Pillow: ``box``, ``bilinear``, ``bicubic``, ``lanczos3``;
    when downscaling the filter is widened by the scale factor. On the CPU
    the call uses up to ``threads`` threads (0: one per CPU); the result does
    not depend on it.
    """
    src = _check_image(img)
    width, height = _check_size(size)
    f, b, n = _check_filter(filter), _backend(backend), _check_threads(threads)
    dst = _output(out, _resized_shape(src, width, height), src)
    _core.resize(src, dst, f, b, n)
    return dst


def gaussian_blur(
    img: np.ndarray,
    sigma: float,
    *,
    backend: BackendName | None = None,
    out: np.ndarray | None = None,
    threads: int = 1,
) -> np.ndarray:
    """Blur ``img`` with a true separable Gaussian of standard deviation ``sigma``.

    The kernel is truncated at radius ceil(3 * sigma) (at least 1) and
    normalised; edges are mirror-reflected (``... c b a | a b c ...``). From
    sigma 6 on it is evaluated on a coarser grid and interpolated back, which
    stays within one level of the exact result (docs/kernels.md). Shapes,
    dtypes and ``threads`` as for :func:`resize`; the output has the input's
    shape.
    """
    src = _check_image(img)
    s, b, n = _check_sigma(sigma), _backend(backend), _check_threads(threads)
    dst = _output(out, src.shape, src)
    _core.gaussian_blur(src, dst, s, b, n)
    return dst


def quantize(
    img: np.ndarray,
    levels: int,
    *,
    dither: bool = False,
    backend: BackendName | None = None,
    out: np.ndarray | None = None,
    threads: int = 1,
) -> np.ndarray:
    """Quantise each colour channel to ``levels`` (2..256) values spread evenly over 0..255.

    Value v maps to round(i * 255 / (levels - 1)) with i = round(v * (levels - 1) / 255),
    or with ``dither=True`` i = floor(v * (levels - 1) / 255 + t) where t comes
    from an 8x8 Bayer matrix at the pixel's position (deterministic). Alpha of
    RGBA images is kept as it is. Output has the input's shape, dtype uint8;
    ``threads`` as for :func:`resize`.
    """
    src = _check_image(img)
    n, b, t = _check_levels(levels), _backend(backend), _check_threads(threads)
    if not isinstance(dither, (bool, np.bool_)):
        raise TypeError(f"dither must be a bool, got {type(dither).__name__}")
    dst = _output(out, src.shape, src)
    _core.quantize(src, dst, n, bool(dither), b, t)
    return dst


class Image:
    """An image held by one backend, for chains of operations.

    On CUDA the pixels are uploaded once when the ``Image`` is made; every
    operation returns a new ``Image`` that stays on the GPU, and only
    :meth:`numpy` copies pixels back. This is how the worker makes three
    outputs from one decoded upload::

        src = fastimg.Image(pixels)                 # one upload
        thumb = src.resize((320, 240)).numpy()
        blur = src.resize((640, 480)).gaussian_blur(12.8).numpy()

    On the CPU the same code runs on a private copy of the pixels, or with
    ``copy=False`` on the array itself (no copy; the array is kept alive, and
    must not be modified while the ``Image`` is in use). On CUDA the pixels are
    uploaded either way.

    CUDA failures raise :class:`KernelError` or its subclasses; after a
    :class:`DeviceLost`, images already on the GPU cannot be used, and new ones
    (``backend=None``) are made on the CPU.
    """

    __slots__ = ("_channels_axis", "_img")

    def __init__(self, img: np.ndarray, *, backend: BackendName | None = None, copy: bool = True) -> None:
        src = _check_image(img)
        self._channels_axis = src.ndim == 3
        self._img = _core.Image(src, _backend(backend), bool(copy))

    @classmethod
    def _wrap(cls, core_img: _core.Image, channels_axis: bool) -> Image:
        self = cls.__new__(cls)
        self._img = core_img
        self._channels_axis = channels_axis
        return self

    @property
    def shape(self) -> tuple[int, ...]:
        """(H, W) or (H, W, C), as the array this image came from."""
        h, w, c = self._img.dims
        return (h, w, c) if self._channels_axis else (h, w)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow reports it."""
        h, w, _ = self._img.dims
        return (w, h)

    @property
    def backend(self) -> str:
        """``"cpu"`` or ``"cuda"``: where the pixels live."""
        return self._img.backend.name

    def resize(self, size: tuple[int, int], *, filter: FilterName = "lanczos3") -> Image:
        """Resampled copy, as :func:`resize`, on the same backend."""
        width, height = _check_size(size)
        return Image._wrap(self._img.resize(width, height, _check_filter(filter)), self._channels_axis)

    def gaussian_blur(self, sigma: float) -> Image:
        """Blurred copy, as :func:`gaussian_blur`, on the same backend."""
        return Image._wrap(self._img.gaussian_blur(_check_sigma(sigma)), self._channels_axis)

    def quantize(self, levels: int, *, dither: bool = False) -> Image:
        """Quantised copy, as :func:`quantize`, on the same backend."""
        return Image._wrap(self._img.quantize(_check_levels(levels), bool(dither)), self._channels_axis)

    def numpy(self) -> np.ndarray:
        """The pixels as a new uint8 array shaped like :attr:`shape`."""
        out = np.empty(self.shape, np.uint8)
        self._img.download(out)
        return out

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        arr = self.numpy()
        return arr if dtype is None else arr.astype(dtype)  # type: ignore[call-overload]  # numpy's protocol

    def __repr__(self) -> str:
        return f"fastimg.Image(shape={self.shape}, backend={self.backend!r})"
