"""16-bit and float images in the three kernels, same dtype out, against the
float64 reference: uint16 within 1 level, float32 within 1e-4 of full
intensity (relative, for values beyond it); quantize exact."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from PIL import Image

import fastimg

CHANNELS = [None, 1, 3, 4]
ODD_SIZES = [(1, 1), (7, 3), (37, 53), (101, 17), (5, 129)]
DTYPES = [np.uint16, np.float32]


def image(rng, h: int, w: int, channels: int | None, dtype) -> np.ndarray:
    """Fresh random pixels: uint16 over 0..65535; float32 colour over
    -0.25..4 (undershoot and high dynamic range), alpha over 0..1."""
    shape = (h, w) if channels is None else (h, w, channels)
    if dtype == np.uint16:
        return rng.gen.integers(0, 65536, shape, dtype=np.uint16)
    img = rng.gen.uniform(-0.25, 4.0, shape).astype(np.float32)
    if channels == 4:
        img[..., 3] = rng.gen.random((h, w), dtype=np.float32)
    return img


def error(got: np.ndarray, want: np.ndarray) -> float:
    """The largest difference in levels (uint16) or relative to max(1, |want|)
    (float32). For RGBA, colour is compared as it is seen, times its alpha
    (dividing by a near-zero alpha magnifies any rounding of the float
    sums), and as it is where alpha is at least 1/256 of full."""
    assert got.dtype == want.dtype and got.shape == want.shape
    g, w = got.astype(np.float64), want.astype(np.float64)
    scale = np.ones_like(w) if got.dtype == np.uint16 else np.maximum(1.0, np.abs(w))
    if got.ndim == 3 and got.shape[2] == 4:
        full = ref.full(got.dtype)
        # Colour and alpha each within the tolerance: their product within twice it.
        seen = np.abs(g[..., :3] * g[..., 3:] - w[..., :3] * w[..., 3:]) / full / scale[..., :3] / 2
        solid = np.minimum(g[..., 3], w[..., 3]) >= full / 256
        plain = (np.abs(g - w) / scale)[..., :3][solid]
        return float(max(seen.max(), plain.max(initial=0), (np.abs(g - w) / scale)[..., 3].max()))
    return float((np.abs(g - w) / scale).max(initial=0))


def tolerance(dtype) -> float:
    return 1.0 if dtype == np.uint16 else 1e-4


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("filter", fastimg.FILTERS)
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("hw", ODD_SIZES)
def test_resize_matches_float64_reference(rng, dtype, filter, channels, hw):
    img = image(rng, *hw, channels, dtype)
    for scale in (0.3, 2.7):
        size = (max(1, round(hw[1] * scale)), max(1, round(hw[0] * scale * 1.1)))
        got = fastimg.resize(img, size, filter=filter, backend="cpu")
        want = ref.resize(img if channels else img[..., None], size, filter).reshape(got.shape)
        assert error(got, want) <= tolerance(dtype), (size, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sigma", [0.3, 2.5, 8.0])
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("hw", ODD_SIZES)
def test_blur_matches_float64_reference(rng, dtype, sigma, channels, hw):
    img = image(rng, *hw, channels, dtype)
    got = fastimg.gaussian_blur(img, sigma, backend="cpu")
    want = ref.gaussian_blur(img if channels else img[..., None], sigma).reshape(got.shape)
    assert error(got, want) <= tolerance(dtype), rng


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dither", [False, True])
@pytest.mark.parametrize("channels", CHANNELS)
def test_quantize_is_exact(rng, dtype, dither, channels):
    check_quantize_is_exact(rng, dtype, dither, channels, "cpu")


def check_quantize_is_exact(rng, dtype, dither, channels, backend):
    """Shared with the CUDA tests: every level count, NaN taken as 0."""
    img = image(rng, 67, 45, channels, dtype)
    if dtype == np.float32:
        img.flat[::97] = np.nan  # taken as 0
    for levels in (2, 3, 16, 256):
        got = fastimg.quantize(img, levels, dither=dither, backend=backend)
        np.testing.assert_array_equal(got, ref.quantize(img, levels, dither), err_msg=repr(rng))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["resize", "blur", "wide-blur", "quantize"])
@pytest.mark.parametrize("channels", CHANNELS)
def test_every_output_pixel_is_written(rng, dtype, op, channels):
    img = image(rng, 41, 29, channels, dtype)
    results = []
    for poison in (0, 7):
        shape = (13, 17) + img.shape[2:] if op == "resize" else img.shape
        out = np.full(shape, poison, dtype)
        if op == "resize":
            fastimg.resize(img, (17, 13), out=out)
        elif op == "quantize":
            fastimg.quantize(img, 9, out=out)
        else:
            fastimg.gaussian_blur(img, 1.7 if op == "blur" else 9.5, out=out)
        results.append(out)
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_threads_images_and_protocols_keep_the_dtype(rng, dtype):
    img = image(rng, 301, 257, 3, dtype)
    for call in (
        lambda **kw: fastimg.resize(img, (101, None), **kw),
        lambda **kw: fastimg.gaussian_blur(img, 9.0, **kw),
        lambda **kw: fastimg.quantize(img, 7, dither=True, **kw),
    ):
        one = call(backend="cpu")
        assert one.dtype == dtype
        np.testing.assert_array_equal(call(backend="cpu", threads=3), one)
    src = fastimg.Image(img, backend="cpu")
    assert src.dtype == dtype and np.from_dlpack(src).dtype == dtype
    chained = src.resize((45, 60)).gaussian_blur(1.5).quantize(16).numpy()
    step = fastimg.quantize(fastimg.gaussian_blur(fastimg.resize(img, (45, 60)), 1.5), 16)
    np.testing.assert_array_equal(chained, step)
    with pytest.raises(TypeError, match="out"):
        fastimg.resize(img, (2, 2), out=np.empty((2, 2, 3), np.uint8))


def test_sixteen_bit_pil_images(rng):
    img = image(rng, 45, 61, None, np.uint16)
    pil = Image.fromarray(img)  # mode I;16
    assert pil.mode == "I;16"
    got = fastimg.resize(pil, (30, None))
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, fastimg.resize(img, (30, None)))


def test_other_dtypes_are_refused_by_name():
    for dtype in (np.int16, np.float64, np.uint32):
        with pytest.raises(TypeError, match=r"dtype uint8, uint16, float32; got"):
            fastimg.resize(np.zeros((4, 4), dtype), (2, 2))
