"""The kernels against float64 references, Pillow, and their own contracts."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import reference as ref
from conftest import PHOTOS, load_photo
from PIL import Image

import fastimg
from fastimg import _core

CHANNELS = [None, 1, 3, 4]  # None: a 2-D (H, W) array
ODD_SIZES = [(1, 1), (7, 3), (37, 53), (101, 17), (5, 129)]


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max(initial=0))


def colour_diff(got: np.ndarray, want: np.ndarray) -> int:
    """Largest difference, ignoring the colour of pixels whose alpha rounds to
    zero on either side (the colour of a transparent pixel means nothing, and
    an alpha right at 0.5 can round either way)."""
    if got.ndim == 3 and got.shape[2] == 4:
        visible = (got[..., 3] > 0) & (want[..., 3] > 0)
        return max(max_diff(got[..., 3], want[..., 3]), max_diff(got[visible][:, :3], want[visible][:, :3]))
    return max_diff(got, want)


@pytest.mark.parametrize("filter", fastimg.FILTERS)
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("hw", ODD_SIZES)
@pytest.mark.parametrize("scale", [0.13, 0.5, 1.0, 2.7])
def test_resize_matches_float64_reference(rng, filter, channels, hw, scale):
    img = rng.image(*hw, channels)
    size = (max(1, round(hw[1] * scale)), max(1, round(hw[0] * scale * 1.1)))
    got = fastimg.resize(img, size, filter=filter, backend="cpu")
    want = ref.resize(img if channels else img[..., None], size, filter).reshape(got.shape)
    assert colour_diff(got, want) <= 1, rng


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5, 8.0, 40.0])
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("hw", ODD_SIZES)
def test_blur_matches_float64_reference(rng, sigma, channels, hw):
    img = rng.image(*hw, channels)
    got = fastimg.gaussian_blur(img, sigma, backend="cpu")
    want = ref.gaussian_blur(img if channels else img[..., None], sigma).reshape(got.shape)
    assert colour_diff(got, want) <= 1, rng


@pytest.mark.parametrize("radius", range(1, 11))
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_blur_at_each_radius_around_the_image_size(rng, radius, channels):
    # The CPU engines fold mirrored taps (docs/kernels.md) for radii up to 8
    # on images larger than the radius, and sweep the others: sizes on both
    # sides of that limit, for radii on both sides of it.
    sigma = (radius - 0.5) / 3
    for hw in [(radius, radius + 1), (radius + 1, 2 * radius + 1), (2 * radius + 2, 3 * radius + 5)]:
        img = rng.image(*hw, channels)
        got = fastimg.gaussian_blur(img, sigma, backend="cpu")
        assert colour_diff(got, ref.gaussian_blur(img, sigma)) <= 1, (hw, rng)


@pytest.mark.parametrize("sigma", [6.0, 7.3, 8.0, 8.4])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_wide_blur_on_even_heights(rng, sigma, channels):
    # A wide blur's first stage is evaluated at every other row; on an even
    # height its rows pair up around each output, and the AVX-512 engine
    # folds them up to sigma 8 (docs/kernels.md). Heights below and above the
    # pairs' reach, and tall enough for threads to cut the rows into bands.
    for hw in [(2, 9), (26, 31), (52, 17), (118, 45), (390, 23)]:
        img = rng.image(*hw, channels)
        got = fastimg.gaussian_blur(img, sigma, backend="cpu")
        assert colour_diff(got, ref.gaussian_blur(img, sigma)) <= 1, (hw, rng)
        threaded = fastimg.gaussian_blur(img, sigma, backend="cpu", threads=3)
        np.testing.assert_array_equal(threaded, got)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_wide_images_match_the_float64_reference(rng, channels):
    # Wide enough for the CPU engine to cut the output into strips (each with
    # its own edge windows), tall enough for several blocks of rows.
    img = rng.image(75, 1213, channels)
    want = ref.resize(img, (611, 38), "lanczos3")
    assert colour_diff(fastimg.resize(img, (611, 38), backend="cpu"), want) <= 1, rng
    for sigma in (2.0, 8.0):
        got = fastimg.gaussian_blur(img, sigma, backend="cpu")
        assert colour_diff(got, ref.gaussian_blur(img, sigma)) <= 1, (sigma, rng)


@pytest.mark.parametrize("threads", [2, 3, 0])
def test_threads_change_nothing_but_speed(rng, threads):
    img = rng.image(301, 257, 3)
    calls = [
        lambda **kw: fastimg.resize(img, (101, 211), **kw),
        lambda **kw: fastimg.gaussian_blur(img, 2.5, **kw),
        lambda **kw: fastimg.gaussian_blur(img, 9.0, **kw),
        lambda **kw: fastimg.quantize(img, 7, **kw),
        lambda **kw: fastimg.quantize(img, 7, dither=True, **kw),
    ]
    for call in calls:
        np.testing.assert_array_equal(call(backend="cpu", threads=threads), call(backend="cpu"))


@pytest.mark.parametrize("levels", [2, 3, 5, 16, 32, 255, 256])
@pytest.mark.parametrize("dither", [False, True])
@pytest.mark.parametrize("channels", CHANNELS)
def test_quantize_is_exact(rng, levels, dither, channels):
    img = rng.image(67, 45, channels)
    got = fastimg.quantize(img, levels, dither=dither, backend="cpu")
    np.testing.assert_array_equal(got, ref.quantize(img, levels, dither), err_msg=repr(rng))


def test_quantize_gives_exactly_the_levels():
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for levels in (2, 7, 32, 256):
        values = np.unique(fastimg.quantize(ramp, levels))
        np.testing.assert_array_equal(values, np.floor(np.arange(levels) * 255 / (levels - 1) + 0.5))


def test_dither_preserves_mean_of_flat_areas():
    # A flat grey between two levels comes out as a mix of both whose mean is
    # the grey (to the resolution of the 64-entry matrix).
    flat = np.full((64, 64), 100, np.uint8)
    out = fastimg.quantize(flat, 4, dither=True)
    assert set(np.unique(out)) == {85, 170}
    assert abs(out.mean() - 100) < 255 / 3 / 64 + 1e-9


@pytest.mark.parametrize("name", PHOTOS)
def test_photos_against_reference(name):
    img = load_photo(name)
    h, w = img.shape[:2]
    small = (max(1, w // 3), max(1, h // 3))
    assert (
        max_diff(
            fastimg.resize(img, small),
            ref.resize(img[..., None] if img.ndim == 2 else img, small).reshape(small[::-1] + img.shape[2:]),
        )
        <= 1
    )
    for sigma in (2.0, 6.5, 12.8, 30.0):
        want = ref.gaussian_blur(img[..., None] if img.ndim == 2 else img, sigma).reshape(img.shape)
        got = fastimg.gaussian_blur(img, sigma)
        assert max_diff(got, want) <= 1, sigma
        # From sigma 6 on the blur is evaluated on a coarser grid and
        # interpolated (docs/kernels.md): almost every pixel is still exact.
        assert np.abs(got.astype(float) - want).mean() < 0.05, sigma
    np.testing.assert_array_equal(fastimg.quantize(img, 32, dither=True), ref.quantize(img, 32, True))


# Largest difference to Pillow seen on the corpus, per filter (docs/kernels.md).
# Pillow rounds and clamps to 8 bits between its two passes, we do not: where
# bicubic or Lanczos ringing overshoots 0..255 after the first pass, Pillow
# loses the overshoot that the second pass would have cancelled. Elsewhere the
# two agree to the rounding of that intermediate step.
PILLOW_TOLERANCE = {"box": 1, "bilinear": 1, "bicubic": 16, "lanczos3": 26}
PIL_FILTER = {"box": Image.BOX, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos3": Image.LANCZOS}


@pytest.mark.parametrize("filter", fastimg.FILTERS)
@pytest.mark.parametrize("name", PHOTOS)
def test_resize_close_to_pillow(filter, name):
    img = load_photo(name)
    h, w = img.shape[:2]
    for size in ((w // 4 + 1, h // 5 + 1), (w * 3 // 2, h * 4 // 3)):
        ours = fastimg.resize(img, size, filter=filter)
        pillow = np.asarray(Image.fromarray(img).resize(size, PIL_FILTER[filter]))
        assert max_diff(ours, pillow) <= PILLOW_TOLERANCE[filter], size
        assert np.abs(ours.astype(float) - pillow).mean() < 0.3, size


# copy=False shares the array on the CPU only (CUDA uploads either way, which
# test_kernels_cuda.py checks), so these pin the CPU whatever the default is.
def test_image_without_copy_works_on_the_array_itself(rng):
    img = rng.image(37, 53, 3)
    want = fastimg.resize(img, (20, 11), backend="cpu")
    shared = fastimg.Image(img, backend="cpu", copy=False)
    private = fastimg.Image(img.copy(), backend="cpu")
    np.testing.assert_array_equal(shared.resize((20, 11)).numpy(), want)
    img[:] = 255 - img  # visible through the shared image only
    np.testing.assert_array_equal(shared.resize((20, 11)).numpy(), fastimg.resize(img, (20, 11), backend="cpu"))
    np.testing.assert_array_equal(private.resize((20, 11)).numpy(), want)


def test_image_without_copy_keeps_its_array_alive(rng):
    import gc
    import weakref

    class Owned(np.ndarray):
        pass  # plain ndarrays cannot be weakly referenced

    img = Owned((41, 29, 4), np.uint8)  # owns its memory
    img[:] = rng.image(41, 29, 4)
    want = fastimg.resize(np.asarray(img), (9, 7), backend="cpu")
    alive = weakref.ref(img)
    shared = fastimg.Image(img, backend="cpu", copy=False)
    del img
    gc.collect()
    assert alive() is not None
    np.testing.assert_array_equal(shared.resize((9, 7)).numpy(), want)
    del shared
    gc.collect()
    assert alive() is None


def chain(img: np.ndarray, steps: list, backend: str) -> np.ndarray:
    """Resize ("resize", w, h, filter) and blur ("blur", sigma) steps run as
    one chain of separable stages, unrounded in between: the only way to make
    three stages or more, which no public call does."""
    core_steps = [(s[0], s[1], s[2], getattr(_core.Filter, s[3])) if s[0] == "resize" else s for s in steps]
    width, height = next(((s[1], s[2]) for s in reversed(steps) if s[0] == "resize"), img.shape[1::-1])
    out = np.empty((height, width) + img.shape[2:], np.uint8)
    _core.separable(img, out, core_steps, getattr(_core.Backend, backend))
    return out


def chain_steps(hw: tuple, kind: str) -> list:
    """Three stages or more from an image of size hw: resizes of several
    filters down and up, or resizes around a (one-stage) blur."""
    h, w = hw

    def size(f: float) -> tuple:
        return max(1, round(w * f)), max(1, round(h * f))

    if kind == "resizes":
        return [("resize", *size(0.6), "lanczos3"), ("resize", *size(1.3), "bicubic"), ("resize", *size(0.45), "box")]
    return [("resize", *size(1.7), "bilinear"), ("blur", 1.5), ("resize", *size(0.8), "lanczos3")]


def chain_reference(img: np.ndarray, steps: list) -> np.ndarray:
    from scipy import ndimage

    f = ref._premultiply(img if img.ndim == 3 else img[..., None])
    for s in steps:
        if s[0] == "resize":
            f = np.tensordot(ref.resize_matrix(f.shape[0], s[2], s[3]), f, axes=(1, 0))
            f = np.moveaxis(np.tensordot(ref.resize_matrix(f.shape[1], s[1], s[3]), f, axes=(1, 1)), 0, 1)
        else:
            w = ref.gaussian_weights(s[1])
            f = ndimage.correlate1d(ndimage.correlate1d(f, w, axis=0, mode="reflect"), w, axis=1, mode="reflect")
    out = ref._unpremultiply(f)
    return out if img.ndim == 3 else out[..., 0]


@pytest.mark.parametrize("kind", ["resizes", "blur"])
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("hw", [(1, 1), (37, 53), (101, 17)])
def test_three_stage_chain_matches_float64_reference(rng, kind, channels, hw):
    img = rng.image(*hw, channels)
    steps = chain_steps(hw, kind)
    assert colour_diff(chain(img, steps, "cpu"), chain_reference(img, steps)) <= 1, rng


def test_wide_blur_of_a_photo_with_alpha():
    # The coarse-grid blur keeps premultiplied floats between its stages, so
    # faint pixels keep their colour as well as opaque ones do.
    img = load_photo("astronaut.png")[::2, ::2]
    h, w = img.shape[:2]
    alpha = np.clip(np.hypot(*np.mgrid[-h // 2 : h - h // 2, -w // 2 : w - w // 2]) * 1.5 - 60, 0, 255)
    rgba = np.dstack([img, alpha.astype(np.uint8)])
    for sigma in (9.0, 21.0):
        got, want = fastimg.gaussian_blur(rgba, sigma), ref.gaussian_blur(rgba, sigma)
        assert max_diff(got[..., 3], want[..., 3]) <= 1, sigma
        # Unpremultiplying divides by alpha, so where alpha is a few levels
        # any float rounding is magnified; compare colour as it is seen there.
        seen = lambda im: im[..., :3].astype(float) * im[..., 3:] / 255  # noqa: E731
        assert np.abs(seen(got) - seen(want)).max() <= 1.5, sigma
        solid = (got[..., 3] >= 16) & (want[..., 3] >= 16)
        assert max_diff(got[solid][:, :3], want[solid][:, :3]) <= 1, sigma


@pytest.mark.parametrize("op", ["resize", "blur", "wide-blur", "quantize"])
@pytest.mark.parametrize("channels", CHANNELS)
def test_every_output_pixel_is_written(rng, op, channels):
    img = rng.image(41, 29, channels)
    results = []
    for poison in (0, 255):
        if op == "resize":
            out = np.full((13, 17) + img.shape[2:], poison, np.uint8)
            fastimg.resize(img, (17, 13), out=out)
        elif op in ("blur", "wide-blur"):
            out = np.full(img.shape, poison, np.uint8)
            fastimg.gaussian_blur(img, 1.7 if op == "blur" else 9.5, out=out)
        else:
            out = np.full(img.shape, poison, np.uint8)
            fastimg.quantize(img, 9, out=out)
        results.append(out)
    np.testing.assert_array_equal(results[0], results[1])


def red_disc_on_transparent(size: int = 200) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    img = np.zeros((size, size, 4), np.uint8)
    # Fully transparent white background: straight-alpha resampling would
    # bleed this white into the disc's edge.
    img[..., :3] = 255
    inside = (yy - size / 2) ** 2 + (xx - size / 2.5) ** 2 < (size / 3) ** 2
    img[inside] = (255, 0, 0, 255)
    return img


@pytest.mark.parametrize("filter", fastimg.FILTERS)
def test_alpha_edges_keep_their_colour(filter):
    img = red_disc_on_transparent()
    small = fastimg.resize(img, (57, 57), filter=filter)
    blurred = fastimg.gaussian_blur(small, 3.0)
    for out in (small, blurred):
        visible = out[..., 3] > 0
        assert visible.any() and (out[..., 3] < 255).any()
        assert (out[visible][:, :3] == (255, 0, 0)).all()


def test_non_contiguous_views_equal_their_copies(rng):
    img = rng.image(90, 70, 4)
    views = [img[::2, ::3], img[5:60, 7:50, :3], img.transpose(1, 0, 2), img[::-1, :, 0]]
    for v in views:
        c = np.ascontiguousarray(v)
        np.testing.assert_array_equal(fastimg.resize(v, (23, 31)), fastimg.resize(c, (23, 31)))
        np.testing.assert_array_equal(fastimg.gaussian_blur(v, 2.2), fastimg.gaussian_blur(c, 2.2))
        np.testing.assert_array_equal(fastimg.quantize(v, 6, dither=True), fastimg.quantize(c, 6, dither=True))


def test_image_chain_matches_functions(rng):
    img = rng.image(120, 90, 3)
    src = fastimg.Image(img, backend="cpu")
    assert src.shape == img.shape and src.size == (90, 120) and src.backend == "cpu"
    chained = src.resize((45, 60)).gaussian_blur(1.5).quantize(16).numpy()
    step = fastimg.quantize(fastimg.gaussian_blur(fastimg.resize(img, (45, 60)), 1.5), 16)
    np.testing.assert_array_equal(chained, step)
    np.testing.assert_array_equal(np.asarray(src), img)
    assert fastimg.Image(img[..., 0]).resize((9, 8)).shape == (8, 9)


BAD_CALLS = [
    (lambda: fastimg.resize([[1]], (1, 1)), TypeError, "img"),
    (lambda: fastimg.resize(np.zeros((4, 4), np.float64), (1, 1)), TypeError, "img"),
    (lambda: fastimg.resize(np.zeros((4, 4, 2), np.uint8), (1, 1)), ValueError, "img"),
    (lambda: fastimg.resize(np.zeros((4,), np.uint8), (1, 1)), ValueError, "img"),
    (lambda: fastimg.resize(np.zeros((0, 4), np.uint8), (1, 1)), ValueError, "img"),
    (lambda: fastimg.resize(np.zeros((4, 4), np.uint8), (0, 1)), ValueError, "size"),
    (lambda: fastimg.resize(np.zeros((4, 4), np.uint8), (-3, 2)), ValueError, "size"),
    (lambda: fastimg.resize(np.zeros((4, 4), np.uint8), (2.5, 2)), TypeError, "size"),
    (lambda: fastimg.resize(np.zeros((4, 4), np.uint8), 3), TypeError, "size"),
    (lambda: fastimg.resize(np.zeros((4, 4), np.uint8), (2, 2), filter="nearest"), ValueError, "filter"),
    (lambda: fastimg.resize(np.zeros((4, 4), np.uint8), (2, 2), backend="tpu"), ValueError, "backend"),
    (lambda: fastimg.resize(np.zeros((4, 4), np.uint8), (2, 2), out=np.zeros((3, 2), np.uint8)), ValueError, "out"),
    (lambda: fastimg.gaussian_blur(np.zeros((4, 4), np.uint8), 0), ValueError, "sigma"),
    (lambda: fastimg.gaussian_blur(np.zeros((4, 4), np.uint8), -1.0), ValueError, "sigma"),
    (lambda: fastimg.gaussian_blur(np.zeros((4, 4), np.uint8), float("nan")), ValueError, "sigma"),
    (lambda: fastimg.gaussian_blur(np.zeros((4, 4), np.uint8), "2"), TypeError, "sigma"),
    (lambda: fastimg.quantize(np.zeros((4, 4), np.uint8), 1), ValueError, "levels"),
    (lambda: fastimg.quantize(np.zeros((4, 4), np.uint8), 257), ValueError, "levels"),
    (lambda: fastimg.quantize(np.zeros((4, 4), np.uint8), 4.0), TypeError, "levels"),
    (lambda: fastimg.quantize(np.zeros((4, 4), np.uint8), 4, dither="yes"), TypeError, "dither"),
    (lambda: fastimg.resize(np.zeros((4, 4), np.uint8), (2, 2), threads=-1), ValueError, "threads"),
    (lambda: fastimg.gaussian_blur(np.zeros((4, 4), np.uint8), 1.0, threads=1.5), TypeError, "threads"),
    (lambda: fastimg.quantize(np.zeros((4, 4), np.uint8), 4, threads=True), TypeError, "threads"),
]


@pytest.mark.parametrize("call, exc, name", BAD_CALLS)
def test_bad_arguments_name_the_argument(call, exc, name):
    with pytest.raises(exc, match=name):
        call()


def test_out_must_not_alias_input():
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="out"):
        fastimg.gaussian_blur(img, 1.0, out=img)


def test_backends_report():
    info = fastimg.backends()
    assert info.available[-1] == "cpu" and info.default == info.available[0]
    if "cuda" in info.available:
        assert info.cuda_device and info.cuda_reason is None
    else:
        assert info.cuda_reason  # says why
        with pytest.raises(fastimg.BackendUnavailableError, match="cuda"):
            fastimg.resize(np.zeros((4, 4), np.uint8), (2, 2), backend="cuda")
        with pytest.raises(fastimg.BackendUnavailableError, match="cuda"):
            fastimg.Image(np.zeros((4, 4), np.uint8), backend="cuda")
    assert info.describe()


# The CPU engine is compiled for three targets and runs on the best the CPU
# has; FASTIMG_CPU_TARGET caps it, so the narrower ones are checked against
# the float64 reference here too, each in a process of its own (quantize
# too: each instruction set applies its table its own way).
@pytest.mark.parametrize("target", ["baseline", "x86-64-v3"])
def test_every_cpu_target_matches_the_reference(target):
    env = {**os.environ, "FASTIMG_CPU_TARGET": target}
    probe = [sys.executable, "-c", "import fastimg; print(fastimg.backends().cpu_target)"]
    got = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=60).stdout.strip()
    assert got == target or (target == "x86-64-v3" and got == "baseline"), got  # at most the cap
    tests = "(reference or alpha or every_output_pixel or non_contiguous or quantize) and not every_cpu_target"
    res = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k", tests],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " passed" in res.stdout


def test_kernels_release_the_gil():
    # While one thread is inside a long kernel, another must keep running
    # Python code. With the GIL held it could not run a single bytecode.
    img = np.random.default_rng(1).integers(0, 256, (1500, 1500, 3), np.uint8)
    done = threading.Event()
    ticks = 0

    def work() -> None:
        fastimg.gaussian_blur(img, 12.0, backend="cpu")
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks += 1
    t.join()
    assert ticks > 1000
