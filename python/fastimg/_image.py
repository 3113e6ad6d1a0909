"""fastimg.Image: pixels held by one backend, for chains of operations, and
what the kernels return for an input that lives on the GPU."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from . import _core
from ._arrays import DLPACK_CUDA, device_array, host_array, is_on_device
from ._checks import FilterArg, SizeArg, check_dither, check_filter, check_levels, check_sigma, check_size

BackendName = Literal["cpu", "cuda"]


def pick_backend(backend: str | None) -> _core.Backend:
    """The native backend for ``backend`` (None: the default), if available."""
    from ._kernels import backends  # the report lives with the other public functions

    info = backends()
    if backend is None:
        backend = info.default
    if backend not in ("cpu", "cuda"):
        raise ValueError(f"backend must be None, 'cpu' or 'cuda', got {backend!r}")
    if backend not in info.available:
        from ._kernels import BackendUnavailableError

        raise BackendUnavailableError(f"backend 'cuda' is not available: {info.cuda_reason}")
    return getattr(_core.Backend, backend)


class Image:
    """An image held by one backend, for chains of operations.

    On CUDA the pixels are uploaded once when the ``Image`` is made; every
    operation returns a new ``Image`` that stays on the GPU, and only
    :meth:`numpy` copies pixels back. This is how the worker makes three
    outputs from one decoded upload::

        src = fastimg.Image(pixels)                 # one upload
        thumb = src.resize((320, None)).numpy()     # 320 wide, the aspect kept
        blur = src.resize((640, 480)).gaussian_blur(12.8).numpy()

    ``img`` is anything :func:`resize` takes. On the CPU the same code runs on
    a private copy of the pixels, or with ``copy=False`` on the array itself
    (no copy; the array is kept alive, and must not be modified while the
    ``Image`` is in use). On CUDA host pixels are uploaded either way, and a
    CUDA device array (DLPack, ``__cuda_array_interface__``) is copied on the
    device, never through the host.

    An ``Image`` hands its pixels to other libraries without a copy: through
    ``__dlpack__`` (``torch.from_dlpack``, ``numpy.from_dlpack`` on the CPU,
    ``cupy.from_dlpack``) and, on CUDA, ``__cuda_array_interface__`` (CuPy,
    Numba). Every operation has finished when it returns, so a consumer needs
    no synchronisation.

    CUDA failures raise :class:`KernelError` or its subclasses; after a
    :class:`DeviceLost`, images already on the GPU cannot be used, and new ones
    (``backend=None``) are made on the CPU.
    """

    __slots__ = ("_channels_axis", "_img")

    def __init__(self, img: object, *, backend: BackendName | None = None, copy: bool = True) -> None:
        if is_on_device(img):
            if backend == "cpu":
                raise ValueError("img is a CUDA device array: use backend=None or 'cuda', or copy it to the host first")
            pick_backend("cuda")
            dev = device_array(img)
            dims = (dev.shape[0], dev.shape[1], dev.shape[2] if len(dev.shape) == 3 else 1)
            self._img = _core.image_from_device(dev.pointer, dims, dev.dtype.str, dev.stream or 0)
            self._channels_axis = len(dev.shape) == 3
            return
        src = host_array(img)
        self._channels_axis = src.ndim == 3
        self._img = _core.Image(src, pick_backend(backend), bool(copy))

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

    @property
    def dtype(self) -> np.dtype[Any]:
        """The pixels' type, as numpy names it."""
        return np.dtype(self._img.typestr)

    def resize(self, size: SizeArg, *, filter: FilterArg = "lanczos3") -> Image:
        """Resampled copy, as :func:`resize`, on the same backend."""
        width, height = check_size(size, self.shape)
        return Image._wrap(self._img.resize(width, height, check_filter(filter)), self._channels_axis)

    def gaussian_blur(self, sigma: float) -> Image:
        """Blurred copy, as :func:`gaussian_blur`, on the same backend."""
        return Image._wrap(self._img.gaussian_blur(check_sigma(sigma)), self._channels_axis)

    def quantize(self, levels: int, *, dither: bool = False) -> Image:
        """Quantised copy, as :func:`quantize`, on the same backend."""
        return Image._wrap(self._img.quantize(check_levels(levels), check_dither(dither)), self._channels_axis)

    def numpy(self) -> np.ndarray:
        """The pixels as a new array in host memory, shaped like :attr:`shape`."""
        out = np.empty(self.shape, self.dtype)
        self._img.download(out)
        return out

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        arr = self.numpy()
        return arr if dtype is None else arr.astype(dtype)  # type: ignore[call-overload]  # numpy's protocol

    def __dlpack__(
        self, *, stream: object = None, max_version: object = None, dl_device: object = None, copy: object = None
    ) -> Any:
        """The pixels as a DLPack capsule, without a copy. Each operation has
        finished when it returns, so ``stream`` needs nothing done."""
        if dl_device is not None and dl_device != self.__dlpack_device__():
            raise BufferError(f"the pixels are on {self.backend}; copy them with .numpy() for the host")
        return self._img.lend(list(self.shape))

    def __dlpack_device__(self) -> tuple[int, int]:
        return (DLPACK_CUDA, 0) if self.backend == "cuda" else (1, 0)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        """The pixels in device memory (version 3 of the interface; no stream:
        every operation has finished when it returns)."""
        if self.backend != "cuda":
            raise AttributeError("the pixels are in host memory: use numpy.asarray or __dlpack__")
        return {
            "shape": self.shape,
            "typestr": self.dtype.str,
            "data": (self._img.data_ptr, False),
            "strides": None,
            "version": 3,
            "stream": None,
        }

    def __repr__(self) -> str:
        return f"fastimg.Image(shape={self.shape}, dtype={self.dtype}, backend={self.backend!r})"
