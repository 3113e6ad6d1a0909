"""Argument checking and dispatch for the native kernels in ``_core``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import overload

import numpy as np

from . import _core
from ._arrays import host_array, is_on_device
from ._checks import (
    FILTERS,
    MAX_SIDE,
    FilterArg,
    FilterName,
    SizeArg,
    check_dither,
    check_filter,
    check_levels,
    check_sigma,
    check_size,
    check_threads,
)
from ._image import BackendName, Image, pick_backend

__all__ = ["FILTERS", "MAX_SIDE", "FilterName", "Image"]


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


def _output(out: np.ndarray | None, shape: tuple[int, ...], src: np.ndarray) -> np.ndarray:
    if out is None:
        return np.empty(shape, src.dtype)
    if not isinstance(out, np.ndarray) or out.dtype != src.dtype:
        raise TypeError(f"out must be a numpy.ndarray of dtype {src.dtype}, the input's")
    if out.shape != shape:
        raise ValueError(f"out must have shape {shape}, got {out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be C-contiguous and writeable")
    if np.shares_memory(out, src):
        raise ValueError("out must not overlap img")
    return out


def _on_device(img: object, backend: str | None, out: object) -> Image | None:
    """``img`` as an :class:`Image` on the GPU if it is a CUDA device array,
    which is processed there; None for pixels in host memory."""
    if not is_on_device(img):
        return None
    if out is not None:
        raise ValueError("out is for host arrays; a CUDA device array's result is a new fastimg.Image on the GPU")
    return Image(img, backend=backend)  # type: ignore[arg-type]  # checked there


def _run(
    img: object,
    backend: str | None,
    out: np.ndarray | None,
    threads: object,
    shape: Callable[[np.ndarray], tuple[int, ...]],
    call: Callable[[np.ndarray, np.ndarray, _core.Backend, int], None],
) -> np.ndarray:
    src = host_array(img)
    dst_shape = shape(src)  # checks the operation's arguments before the backend's
    b, n = pick_backend(backend), check_threads(threads)
    dst = _output(out, dst_shape, src)
    call(src, dst, b, n)
    return dst


def _resized(size: object) -> Callable[[np.ndarray], tuple[int, ...]]:
    def shape(src: np.ndarray) -> tuple[int, ...]:
        width, height = check_size(size, src.shape)
        return (height, width) + src.shape[2:]

    return shape


@overload
def resize(
    img: np.ndarray,
    size: SizeArg,
    *,
    filter: FilterArg = ...,
    backend: BackendName | None = ...,
    out: np.ndarray | None = ...,
    threads: int = ...,
) -> np.ndarray: ...
@overload
def resize(
    img: object,
    size: SizeArg,
    *,
    filter: FilterArg = ...,
    backend: BackendName | None = ...,
    out: np.ndarray | None = ...,
    threads: int = ...,
) -> np.ndarray | Image: ...
def resize(
    img: object,
    size: SizeArg,
    *,
    filter: FilterArg = "lanczos3",
    backend: BackendName | None = None,
    out: np.ndarray | None = None,
    threads: int = 1,
) -> np.ndarray | Image:
    """Resample ``img`` to ``size`` = (width, height), antialiased.

    ``img`` is uint8, uint16 or float32 (full intensity 255, 65535 or 1.0),
    shaped (H, W) or (H, W, C) with C in 1, 3, 4 (4 means RGBA with straight
    alpha, resampled premultiplied); the result has its dtype, integers
    rounded and clamped, floats neither (but alpha, to 0..1). It is a numpy array, or any
    array in host memory that DLPack, the buffer protocol or
    ``__array_interface__`` hands over (torch, JAX, a memoryview, a PIL
    image), read without a copy where its protocol allows. Returns a numpy
    array shaped (height, width) or (height, width, C), which any of those
    libraries takes back without a copy (``torch.from_dlpack``,
    ``PIL.Image.fromarray``); ``out`` may be given to write into. A CUDA
    device array (DLPack with a CUDA device, ``__cuda_array_interface__``:
    torch, CuPy, JAX) is processed on the GPU, never through the host, and
    the result is a :class:`Image` there, which hands its pixels on through
    the same protocols.

    One side of ``size`` may be None: it follows from the other so that the
    aspect ratio is kept (rounded to the nearest, at least 1). Filters follow
    Pillow: ``box``, ``bilinear``, ``bicubic``, ``lanczos3``, or Pillow's own
    constants for them (``Image.Resampling.LANCZOS``); when downscaling the
    filter is widened by the scale factor. On the CPU the call uses up to
    ``threads`` threads (0: one per CPU); the result does not depend on it.
    """
    device = _on_device(img, backend, out)
    if device is not None:
        return device.resize(size, filter=filter)
    f = check_filter(filter)
    return _run(img, backend, out, threads, _resized(size), lambda s, d, b, n: _core.resize(s, d, f, b, n))


@overload
def gaussian_blur(
    img: np.ndarray,
    sigma: float,
    *,
    backend: BackendName | None = ...,
    out: np.ndarray | None = ...,
    threads: int = ...,
) -> np.ndarray: ...
@overload
def gaussian_blur(
    img: object, sigma: float, *, backend: BackendName | None = ..., out: np.ndarray | None = ..., threads: int = ...
) -> np.ndarray | Image: ...
def gaussian_blur(
    img: object,
    sigma: float,
    *,
    backend: BackendName | None = None,
    out: np.ndarray | None = None,
    threads: int = 1,
) -> np.ndarray | Image:
    """Blur ``img`` with a true separable Gaussian of standard deviation ``sigma``.

    The kernel is truncated at radius ceil(3 * sigma) (at least 1) and
    normalised; edges are mirror-reflected (``... c b a | a b c ...``). From
    sigma 6 on, uint8 images are blurred on a coarser grid and interpolated
    back, which stays within one level of the exact result (docs/kernels.md);
    uint16 and float32 images always exactly. Inputs,
    results and ``threads`` as for :func:`resize`; the output has the input's
    shape.
    """
    s = check_sigma(sigma)
    device = _on_device(img, backend, out)
    if device is not None:
        return device.gaussian_blur(s)
    blur = lambda i, d, b, n: _core.gaussian_blur(i, d, s, b, n)  # noqa: E731
    return _run(img, backend, out, threads, lambda src: src.shape, blur)


@overload
def quantize(
    img: np.ndarray,
    levels: int,
    *,
    dither: bool = ...,
    backend: BackendName | None = ...,
    out: np.ndarray | None = ...,
    threads: int = ...,
) -> np.ndarray: ...
@overload
def quantize(
    img: object,
    levels: int,
    *,
    dither: bool = ...,
    backend: BackendName | None = ...,
    out: np.ndarray | None = ...,
    threads: int = ...,
) -> np.ndarray | Image: ...
def quantize(
    img: object,
    levels: int,
    *,
    dither: bool = False,
    backend: BackendName | None = None,
    out: np.ndarray | None = None,
    threads: int = 1,
) -> np.ndarray | Image:
    """Quantise each colour channel to ``levels`` (2..256) values spread evenly over 0..full.

    Full is 255, 65535 or 1.0 by dtype. Value v maps to round(i * full / (levels - 1))
    with i = round(v * (levels - 1) / full), or with ``dither=True``
    i = floor(v * (levels - 1) / full + t) where t comes
    from an 8x8 Bayer matrix at the pixel's position (deterministic). Alpha of
    RGBA images is kept as it is. Floats are clamped to 0..1 first (NaN to 0).
    Inputs, results and ``threads`` as for
    :func:`resize`; the output has the input's shape and dtype.
    """
    n, d = check_levels(levels), check_dither(dither)
    device = _on_device(img, backend, out)
    if device is not None:
        return device.quantize(n, dither=d)
    quant = lambda i, o, b, t: _core.quantize(i, o, n, d, b, t)  # noqa: E731
    return _run(img, backend, out, threads, lambda src: src.shape, quant)
