"""What the kernels take and give back besides numpy arrays: DLPack, the
buffer protocol and __array_interface__ on the CPU, read without a copy;
sizes that keep the aspect ratio; Pillow's filter constants; the messages
for what they cannot take."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from conftest import CUDA
from PIL import Image

import fastimg
from fastimg import _arrays


class DLPackOnly:
    """A producer that offers DLPack and nothing else."""

    def __init__(self, arr: np.ndarray) -> None:
        self._arr = arr

    def __dlpack__(self, **kwargs):
        return self._arr.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._arr.__dlpack_device__()


class ArrayInterfaceOnly:
    def __init__(self, arr: np.ndarray) -> None:
        self.__array_interface__ = arr.__array_interface__
        self._arr = arr  # the memory's owner


def views(arr: np.ndarray) -> dict:
    return {
        "dlpack": DLPackOnly(arr),
        "array-interface": ArrayInterfaceOnly(arr),
        "memoryview": memoryview(arr),
    }


@pytest.mark.parametrize("kind", ["dlpack", "array-interface", "memoryview"])
@pytest.mark.parametrize("channels", [None, 1, 3, 4])
def test_protocols_are_read_without_a_copy(rng, kind, channels):
    img = rng.image(37, 53, channels)
    src = views(img)[kind]
    assert np.shares_memory(_arrays.host_array(src), img)
    want = fastimg.resize(img, (20, None), backend="cpu")
    np.testing.assert_array_equal(fastimg.resize(src, (20, None), backend="cpu"), want)
    np.testing.assert_array_equal(fastimg.gaussian_blur(src, 1.5), fastimg.gaussian_blur(img, 1.5))
    np.testing.assert_array_equal(fastimg.quantize(src, 5, dither=True), fastimg.quantize(img, 5, dither=True))
    # An Image made without a copy works on the source itself: a change to
    # the source shows in its next result.
    shared = fastimg.Image(src, backend="cpu", copy=False)
    img[:] = 255 - img
    np.testing.assert_array_equal(shared.resize((20, None)).numpy(), fastimg.resize(img, (20, None), backend="cpu"))


def test_torch_tensors_in_and_out_without_a_copy(rng):
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
    img = rng.image(41, 67, 3)
    t = torch.from_numpy(img)
    assert np.shares_memory(_arrays.host_array(t), img)
    out = fastimg.resize(t, (None, 20), backend="cpu")
    np.testing.assert_array_equal(out, fastimg.resize(img, (None, 20), backend="cpu"))
    back = torch.from_dlpack(out)
    assert back.data_ptr() == out.ctypes.data and back.shape == out.shape
    # An Image lends its pixels to torch, which keeps them alive.
    pixels = fastimg.Image(t, backend="cpu").gaussian_blur(2.0)
    lent = torch.from_dlpack(pixels)
    want = pixels.numpy()
    del pixels
    gc.collect()
    np.testing.assert_array_equal(lent.numpy(), want)
    with pytest.raises(BufferError, match="gradient"):  # torch's own message: detach() it
        fastimg.resize(torch.zeros((4, 4), requires_grad=True), (2, 2))


def test_pil_images_are_taken_and_numpy_goes_back(rng):
    img = rng.image(45, 61, 4)
    pil = Image.fromarray(img)
    out = fastimg.resize(pil, (30, None), filter=Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(out, fastimg.resize(img, (30, None)))
    assert Image.fromarray(out).size == (30, 22)
    np.testing.assert_array_equal(
        fastimg.gaussian_blur(pil.convert("L"), 2.0), fastimg.gaussian_blur(np.asarray(pil.convert("L")), 2.0)
    )
    with pytest.raises(ValueError, match="palette"):
        fastimg.resize(pil.convert("RGB").convert("P"), (10, 10))


def test_image_lends_its_pixels_through_dlpack(rng):
    img = rng.image(29, 31, 3)
    shared = fastimg.Image(img, backend="cpu", copy=False)
    view = np.from_dlpack(shared)
    assert np.shares_memory(view, img) and view.shape == img.shape
    assert shared.__dlpack_device__() == (1, 0)
    assert not hasattr(shared, "__cuda_array_interface__")  # host memory
    result = shared.quantize(4)
    lent = np.from_dlpack(result)
    del result
    gc.collect()
    np.testing.assert_array_equal(lent, fastimg.quantize(img, 4))
    shared.__dlpack__()  # a capsule no one consumes is released with it
    gc.collect()


def test_size_with_one_side_none_keeps_the_aspect_ratio(rng):
    img = rng.image(427, 640, 3)
    assert fastimg.resize(img, (320, None)).shape == (214, 320, 3)  # 213.5 rounds up
    assert fastimg.resize(img, (None, 100)).shape == (100, 150, 3)
    assert fastimg.resize(img, [1, None]).shape == (1, 1, 3)  # never below 1
    assert fastimg.Image(img).resize((None, 214)).size == (321, 214)
    np.testing.assert_array_equal(fastimg.resize(img, (320, None)), fastimg.resize(img, (320, 214)))
    with pytest.raises(TypeError, match="size"):
        fastimg.resize(img, (None, None))
    with pytest.raises(ValueError, match="size"):
        fastimg.resize(img, (0, None))
    with pytest.raises(ValueError, match="aspect"):
        fastimg.resize(np.zeros((1, 1 << 20), np.uint8), (None, 2))


@pytest.mark.parametrize(
    "pillow, ours", [("BOX", "box"), ("BILINEAR", "bilinear"), ("BICUBIC", "bicubic"), ("LANCZOS", "lanczos3")]
)
def test_pillow_filters_are_ours(rng, pillow, ours):
    img = rng.image(50, 70, 3)
    constant = getattr(Image.Resampling, pillow)
    np.testing.assert_array_equal(
        fastimg.resize(img, (23, 19), filter=constant), fastimg.resize(img, (23, 19), filter=ours)
    )
    assert fastimg.Image(img).resize((23, 19), filter=constant).shape == (19, 23, 3)


@pytest.mark.parametrize("pillow", ["NEAREST", "HAMMING"])
def test_pillow_filters_without_a_counterpart_are_refused(pillow):
    with pytest.raises(ValueError, match=f"Resampling.{pillow} has no fastimg counterpart"):
        fastimg.resize(np.zeros((4, 4), np.uint8), (2, 2), filter=getattr(Image.Resampling, pillow))
    with pytest.raises(ValueError, match="filter"):
        fastimg.resize(np.zeros((4, 4), np.uint8), (2, 2), filter=1)  # a bare int is not Pillow's constant


def test_channels_first_arrays_are_named_as_such():
    with pytest.raises(ValueError, match=r"looks channels-first.*\(3, 427, 640\).*transpose\(1, 2, 0\)"):
        fastimg.resize(np.zeros((3, 427, 640), np.uint8), (320, None))
    with pytest.raises(ValueError, match="1, 3 or 4 channels, got 2"):
        fastimg.resize(np.zeros((5, 4, 2), np.uint8), (2, 2))


def test_what_is_not_an_array_is_refused_by_name():
    with pytest.raises(TypeError, match=r"img must be an array.*__dlpack__.*got list"):
        fastimg.resize([[1, 2], [3, 4]], (1, 1))
    with pytest.raises(TypeError, match="img must have dtype"):
        fastimg.gaussian_blur(memoryview(np.zeros((4, 4), np.int32)), 1.0)


@pytest.mark.skipif(CUDA, reason="checks the message of a machine without a usable GPU")
def test_device_arrays_without_cuda_say_why():
    class OnDevice:
        @property
        def __cuda_array_interface__(self) -> dict:
            return {"shape": (4, 4), "typestr": "|u1", "data": (1 << 40, False), "version": 3}

    with pytest.raises(fastimg.BackendUnavailableError, match="cuda"):
        fastimg.resize(OnDevice(), (2, 2))
