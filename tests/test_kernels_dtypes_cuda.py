"""16-bit and float images on the GPU: against the float64 reference to the
same tolerances as the CPU, quantize exact, every output pixel written, and
device arrays of these types in and out. Skipped, with the reason, without
a GPU; tests/emu/run.sh runs them on the host emulation."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from conftest import requires_cuda
from test_kernels_device import DLPackDevice
from test_kernels_dtypes import (
    CHANNELS,
    DTYPES,
    ODD_SIZES,
    check_quantize_is_exact,
    error,
    image,
    tolerance,
)

import fastimg

pytestmark = requires_cuda


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("hw", ODD_SIZES + [(211, 389)])
def test_resize_and_blur_match_float64_reference(rng, dtype, channels, hw):
    img = image(rng, *hw, channels, dtype)
    plain = img if channels else img[..., None]
    for filter, scale in (("lanczos3", 0.3), ("bicubic", 2.7), ("box", 0.07)):
        size = (max(1, round(hw[1] * scale)), max(1, round(hw[0] * scale)))
        got = fastimg.resize(img, size, filter=filter, backend="cuda")
        assert got.dtype == dtype
        assert error(got, ref.resize(plain, size, filter).reshape(got.shape)) <= tolerance(dtype), (size, rng)
    for sigma in (0.3, 2.5, 8.0):
        got = fastimg.gaussian_blur(img, sigma, backend="cuda")
        assert error(got, ref.gaussian_blur(plain, sigma).reshape(got.shape)) <= tolerance(dtype), (sigma, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dither", [False, True])
@pytest.mark.parametrize("channels", CHANNELS)
def test_quantize_is_exact(rng, dtype, dither, channels):
    check_quantize_is_exact(rng, dtype, dither, channels, "cuda")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", CHANNELS)
def test_every_output_pixel_is_written(rng, dtype, channels):
    img = image(rng, 41, 29, channels, dtype)
    ops = [
        lambda out: fastimg.resize(img, (17, 13), backend="cuda", out=out),
        lambda out: fastimg.gaussian_blur(img, 9.5, backend="cuda", out=out),
        lambda out: fastimg.quantize(img, 9, backend="cuda", out=out),
    ]
    for op in ops:
        shape = op(None).shape
        results = [op(np.full(shape, poison, dtype)) for poison in (0, 7)]
        np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_device_arrays_keep_their_dtype(rng, dtype):
    img = image(rng, 37, 53, 4, dtype)
    src = DLPackDevice(fastimg.Image(img, backend="cuda"))
    got = fastimg.gaussian_blur(fastimg.resize(src, (20, None)), 1.5)
    assert got.backend == "cuda" and got.dtype == dtype
    assert got.__cuda_array_interface__["typestr"] == np.dtype(dtype).str
    want = fastimg.gaussian_blur(fastimg.resize(img, (20, None), backend="cpu"), 1.5, backend="cpu")
    assert error(got.numpy(), want) <= 2 * tolerance(dtype), rng
