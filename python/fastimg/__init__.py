"""fastimg: image kernels (resize, Gaussian blur, quantise) on CUDA and CPU.

Images are numpy uint8 arrays shaped (H, W) or (H, W, C), C in 1, 3, 4; sizes
are (width, height) as in Pillow. ``backend=None`` picks CUDA when a GPU and
driver are present and the CPU otherwise; :func:`backends` says which and why.
"""

from ._kernels import (
    FILTERS,
    Backends,
    BackendUnavailableError,
    Image,
    backends,
    gaussian_blur,
    quantize,
    resize,
)

__all__ = [
    "FILTERS",
    "Backends",
    "BackendUnavailableError",
    "Image",
    "backends",
    "gaussian_blur",
    "quantize",
    "resize",
]
__version__ = "0.1.0"
