"""What the kernels take as an image: a numpy array, or anything that hands
its pixels around without a copy (DLPack, the buffer protocol,
``__array_interface__``), on the CPU; and CUDA device arrays (DLPack with a
CUDA device, ``__cuda_array_interface__``), which stay on the GPU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _core
from ._checks import MAX_SIDE

# The pixel types the kernels take; the output has the input's.
DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
# DLPack's device type of CUDA device memory (DLDeviceType's kDLCUDA).
DLPACK_CUDA = 2
# What DLPack and __cuda_array_interface__ call this thread's default stream,
# the stream the kernels run on (csrc/fastimg/cuda_launch.h).
PER_THREAD_STREAM = 2
# Pillow modes whose array is not pixels of 1, 3 or 4 channels of a colour.
_PILLOW_INDEXED = ("P", "PA")


def _dtype_names() -> str:
    return ", ".join(str(d) for d in DTYPES)


def check_array(arr: np.ndarray, name: str = "img") -> np.ndarray:
    """``arr`` if it is an image the kernels take, packed (views are copied)."""
    if arr.dtype not in DTYPES:
        raise TypeError(f"{name} must have dtype {_dtype_names()}; got {arr.dtype}")
    check_shape(arr.shape, name)
    # Views (slices, transposes) are valid input; the kernels read packed rows.
    return np.ascontiguousarray(arr)


def check_shape(shape: tuple[int, ...], name: str) -> None:
    if len(shape) not in (2, 3):
        raise ValueError(f"{name} must have shape (H, W) or (H, W, C), got {shape}")
    if len(shape) == 3 and shape[2] not in (1, 3, 4):
        if shape[0] in (1, 3, 4):
            raise ValueError(
                f"{name} looks channels-first, shaped (C, H, W) = {shape}; the kernels take (H, W, C): "
                f"pass img.transpose(1, 2, 0) (numpy) or img.permute(1, 2, 0) (torch)"
            )
        raise ValueError(f"{name} must have 1, 3 or 4 channels, got {shape[2]}")
    if not (0 < shape[0] <= MAX_SIDE and 0 < shape[1] <= MAX_SIDE):
        raise ValueError(f"{name} height and width must be in 1..{MAX_SIDE}, got {shape[:2]}")


def host_array(img: object, name: str = "img") -> np.ndarray:
    """``img`` in host memory as a numpy array; a view of it wherever its
    protocol allows (DLPack, the buffer protocol; Pillow hands out a copy)."""
    if isinstance(img, np.ndarray):
        arr = img
    elif hasattr(img, "__dlpack__"):
        arr = np.from_dlpack(img)
    elif hasattr(img, "__array_interface__") or hasattr(img, "__array__"):
        mode = getattr(img, "mode", None)
        if mode in _PILLOW_INDEXED:
            raise ValueError(f"{name} is a palette image (mode {mode!r}): convert it first, e.g. img.convert('RGB')")
        arr = np.asarray(img)
    else:
        try:
            arr = np.asarray(memoryview(img))  # type: ignore[arg-type]  # any object with the buffer protocol
        except TypeError:
            raise TypeError(
                f"{name} must be an array: numpy, or an object with __dlpack__, __array_interface__, "
                f"__cuda_array_interface__ or the buffer protocol; got {type(img).__name__}"
            ) from None
    return check_array(arr, name)


def is_on_device(img: object) -> bool:
    """Whether ``img`` is in CUDA device memory."""
    if isinstance(img, np.ndarray):
        return False
    device = getattr(img, "__dlpack_device__", None)
    if device is not None:
        return int(device()[0]) == DLPACK_CUDA
    return getattr(img, "__cuda_array_interface__", None) is not None


@dataclass(frozen=True)
class DeviceArray:
    """A CUDA device array, as its protocol describes it."""

    pointer: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    stream: int | None  # the producer's stream, which the copy waits for
    owner: object  # keeps the memory alive while it is read


def device_array(img: object, name: str = "img") -> DeviceArray:
    """``img``'s device memory, checked as :func:`check_array` checks host arrays."""
    cai = getattr(img, "__cuda_array_interface__", None)
    if cai is not None:
        desc, owner = dict(cai), img
    else:
        # The producer orders its work before this thread's stream (DLPack).
        owner = _core.dlpack_view(img.__dlpack__(stream=PER_THREAD_STREAM))  # type: ignore[attr-defined]
        desc = owner.interface
        if tuple(desc["device"]) != (DLPACK_CUDA, 0):
            raise ValueError(f"{name} is on CUDA device {desc['device'][1]}; the kernels run on device 0")
    shape = tuple(int(v) for v in desc["shape"])
    dtype = np.dtype(desc["typestr"])
    if dtype not in DTYPES:
        raise TypeError(f"{name} must have dtype {_dtype_names()}; got {dtype}")
    check_shape(shape, name)
    packed = tuple(int(np.prod(shape[i + 1 :])) * dtype.itemsize for i in range(len(shape)))
    strides = desc.get("strides")
    if strides is not None and len(strides) != len(shape):
        raise ValueError(f"{name} has {len(shape)} sides but {len(strides)} strides")
    if strides is not None and any(n > 1 and s != p for n, s, p in zip(shape, strides, packed, strict=True)):
        raise ValueError(f"{name} on the device must be C-contiguous (torch: .contiguous()), got strides {strides}")
    stream = desc.get("stream")
    return DeviceArray(int(desc["data"][0]), shape, dtype, None if stream is None else int(stream), owner)
