"""CUDA device arrays in and out: taken through __cuda_array_interface__ or
DLPack, processed on the GPU, handed back through both without a copy.
Skipped, with the reason, without a GPU; tests/emu/run.sh runs them on the
host emulation, where test_cuda_emu.py also proves that no pixel crosses to
the host on the way."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from conftest import requires_cuda
from test_kernels import CHANNELS, ODD_SIZES, colour_diff

import fastimg
from fastimg import _core

pytestmark = requires_cuda


class CudaArrayInterface:
    """A producer that offers __cuda_array_interface__ only (as Numba does)."""

    def __init__(self, owner: object, **override: object) -> None:
        self._owner = owner  # the memory's owner
        self._interface = {**owner.__cuda_array_interface__, **override}

    @property
    def __cuda_array_interface__(self) -> dict:
        return self._interface


class DLPackDevice:
    """A producer that offers DLPack only (as JAX does); records the streams asked for."""

    def __init__(self, owner: object) -> None:
        self._owner = owner
        self.streams: list = []

    def __dlpack__(self, **kwargs):
        self.streams.append(kwargs.get("stream"))
        return self._owner.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._owner.__dlpack_device__()


WRAPPERS = {
    "cuda-array-interface": CudaArrayInterface,
    "cuda-array-interface-with-stream": lambda owner: CudaArrayInterface(owner, stream=2),
    "dlpack": DLPackDevice,
    "fastimg-image": lambda owner: owner,
}

OPERATIONS = {
    "resize": lambda img, **kw: fastimg.resize(img, (23, None), filter="bicubic", **kw),
    "blur": lambda img, **kw: fastimg.gaussian_blur(img, 2.0, **kw),
    "wide-blur": lambda img, **kw: fastimg.gaussian_blur(img, 9.0, **kw),
    "quantize": lambda img, **kw: fastimg.quantize(img, 5, dither=True, **kw),
}


@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("hw", [ODD_SIZES[0], ODD_SIZES[2], (45, 67)])
def test_device_arrays_are_processed_on_the_device(rng, op, wrapper, channels, hw):
    img = rng.image(*hw, channels)
    src = WRAPPERS[wrapper](fastimg.Image(img, backend="cuda"))
    got = OPERATIONS[op](src)
    assert isinstance(got, fastimg.Image) and got.backend == "cuda"
    want = OPERATIONS[op](img, backend="cpu")
    assert got.shape == want.shape
    assert colour_diff(got.numpy(), want) <= (0 if op == "quantize" else 1), rng
    if wrapper == "dlpack":
        assert src.streams == [2]  # this thread's default stream, the kernels' own


def test_results_hand_their_memory_on_through_both_protocols(rng):
    img = rng.image(37, 53, 4)
    got = fastimg.resize(CudaArrayInterface(fastimg.Image(img, backend="cuda")), (20, 11))
    cai = got.__cuda_array_interface__
    assert cai["shape"] == (11, 20, 4) and cai["typestr"] == "|u1" and cai["version"] == 3
    assert cai["strides"] is None and cai["stream"] is None  # finished when it returned
    lent = _core.dlpack_view(got.__dlpack__(stream=2)).interface
    assert lent["data"][0] == cai["data"][0] and lent["shape"] == (11, 20, 4) and lent["device"] == (2, 0)
    assert got.__dlpack_device__() == (2, 0)
    # A chain: each result is itself a device array, taken as one.
    blurred = fastimg.gaussian_blur(got, 1.5)
    want = fastimg.gaussian_blur(fastimg.resize(img, (20, 11), backend="cpu"), 1.5, backend="cpu")
    assert colour_diff(blurred.numpy(), want) <= 1, rng
    assert colour_diff(fastimg.quantize(DLPackDevice(blurred), 9).numpy(), ref.quantize(blurred.numpy(), 9, False)) == 0


def test_device_arrays_that_cannot_be_taken_say_why(rng):
    owner = fastimg.Image(rng.image(8, 6, 3), backend="cuda")
    with pytest.raises(ValueError, match="C-contiguous"):
        fastimg.resize(CudaArrayInterface(owner, strides=(3, 48, 1)), (2, 2))
    with pytest.raises(TypeError, match="dtype"):
        fastimg.resize(CudaArrayInterface(owner, typestr="<i4", shape=(4, 3)), (2, 2))
    with pytest.raises(ValueError, match="channels-first"):
        fastimg.resize(CudaArrayInterface(owner, shape=(3, 8, 6)), (2, 2))
    with pytest.raises(ValueError, match="out is for host arrays"):
        fastimg.resize(owner, (2, 2), out=np.empty((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="CUDA device array"):
        fastimg.gaussian_blur(owner, 1.0, backend="cpu")
    with pytest.raises((BufferError, RuntimeError), match="device"):
        np.from_dlpack(owner)  # device memory is not the host's: numpy says so


def test_torch_cuda_tensors_stay_on_the_gpu(rng):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if not torch.cuda.is_available() or _core.cuda_status()["emulated"]:
        pytest.skip("torch has no CUDA device here")
    img = rng.image(301, 257, 3)
    t = torch.from_numpy(img).cuda()
    got = fastimg.resize(t, (None, 100))
    back = torch.from_dlpack(got)
    assert back.device.type == "cuda" and back.data_ptr() == got.__cuda_array_interface__["data"][0]
    assert colour_diff(back.cpu().numpy(), fastimg.resize(img, (None, 100), backend="cpu")) <= 1, rng
    assert torch.equal(torch.as_tensor(got, device="cuda").cpu(), back.cpu())
