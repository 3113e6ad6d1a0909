"""fastimg: image kernels (resize, Gaussian blur, quantise) on CUDA and CPU.

Images are uint8, uint16 or float32 arrays (numpy, or anything that hands
its pixels over through DLPack, the buffer protocol or the array interfaces)
shaped (H, W) or (H, W, C), C in 1, 3, 4; sizes
are (width, height) as in Pillow. ``backend=None`` picks CUDA when a GPU and
driver are present and a kernel runs on it, and the CPU otherwise;
:func:`backends` says which and why. CUDA failures raise :class:`KernelError`:
:class:`DeviceOutOfMemory` (transient) or :class:`DeviceLost` (sticky: the
process goes on with the CPU).

The kernels (and numpy) load on first use of any of these names, so that a
web server importing :mod:`fastimg.producer` loads neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._kernels import (
        FILTERS,
        Backends,
        BackendUnavailableError,
        DeviceLost,
        DeviceOutOfMemory,
        Image,
        KernelError,
        backends,
        gaussian_blur,
        quantize,
        resize,
    )

__all__ = [
    "FILTERS",
    "BackendUnavailableError",
    "Backends",
    "DeviceLost",
    "DeviceOutOfMemory",
    "Image",
    "KernelError",
    "backends",
    "gaussian_blur",
    "quantize",
    "resize",
]


def _version() -> str:
    # importlib.metadata costs more to import than a command's --help takes:
    # read on first use of __version__.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fastimg")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()["__version__"] = value = _version()
        return value
    if name in __all__:
        from . import _kernels

        return getattr(_kernels, name)
    raise AttributeError(f"module 'fastimg' has no attribute {name!r}")
