"""fastimg: image kernels (resize, Gaussian blur, quantise) on CUDA and CPU.

Images are numpy uint8 arrays shaped (H, W) or (H, W, C), C in 1, 3, 4; sizes
are (width, height) as in Pillow. ``backend=None`` picks CUDA when a GPU and
driver are present and a kernel runs on it, and the CPU otherwise;
:func:`backends` says which and why. CUDA failures raise :class:`KernelError`:
:class:`DeviceOutOfMemory` (transient) or :class:`DeviceLost` (sticky: the
process goes on with the CPU).
"""

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
    "Backends",
    "BackendUnavailableError",
    "DeviceLost",
    "DeviceOutOfMemory",
    "Image",
    "KernelError",
    "backends",
    "gaussian_blur",
    "quantize",
    "resize",
]
__version__ = "0.1.0"
