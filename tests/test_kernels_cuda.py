"""The same kernels on the GPU: equal to the CPU results (to 1 level for the
float passes, exactly for quantize). Skipped, with the reason, without a GPU;
tests/emu/run.sh runs them on the host emulation of the CUDA source."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import reference as ref
from conftest import PHOTOS, load_photo, requires_cuda
from test_kernels import CHANNELS, ODD_SIZES, chain, chain_steps, colour_diff, red_disc_on_transparent

import fastimg

pytestmark = requires_cuda

# On the host emulation (tests/emu/run.sh) every GPU thread runs in turn on one
# core, under ASan: there the large cases are smaller, yet large enough that a
# one-SM grid loops over each many times.
EMULATED = bool(fastimg._core.cuda_status()["emulated"])
LARGE = (307, 251) if EMULATED else (1013, 771)


@pytest.mark.parametrize("filter", fastimg.FILTERS)
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("hw", ODD_SIZES + [LARGE])
@pytest.mark.parametrize("scale", [0.07, 0.5, 2.7])
def test_resize_gpu_equals_cpu(rng, filter, channels, hw, scale):
    img = rng.image(*hw, channels)
    size = (max(1, round(hw[1] * scale)), max(1, round(hw[0] * scale)))
    gpu = fastimg.resize(img, size, filter=filter, backend="cuda")
    assert colour_diff(gpu, fastimg.resize(img, size, filter=filter, backend="cpu")) <= 1, rng


# 6 and up: two stages, the second on a coarser grid.
@pytest.mark.parametrize("sigma", [0.3, 2.5, 6.0, 8.0, 40.0, 200.0])
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("hw", ODD_SIZES + [LARGE])
def test_blur_gpu_equals_cpu(rng, sigma, channels, hw):
    img = rng.image(*hw, channels)
    gpu = fastimg.gaussian_blur(img, sigma, backend="cuda")
    assert colour_diff(gpu, fastimg.gaussian_blur(img, sigma, backend="cpu")) <= 1, rng


@pytest.mark.parametrize("dither", [False, True])
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("hw", ODD_SIZES + [(517, 333)])
def test_quantize_gpu_is_exact(rng, dither, channels, hw):
    img = rng.image(*hw, channels)
    for levels in (2, 3, 5, 32, 256):
        np.testing.assert_array_equal(
            fastimg.quantize(img, levels, dither=dither, backend="cuda"), ref.quantize(img, levels, dither)
        )


# Three stages and more: stage<C, float, float> between the first and the last.
@pytest.mark.parametrize("steps", ["resizes", "blur", "two-wide-blurs"])
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("hw", ODD_SIZES + [(211, 389)])
def test_chains_of_stages_gpu_equal_cpu(rng, steps, channels, hw):
    img = rng.image(*hw, channels)
    s = [("blur", 8.0), ("blur", 6.5)] if steps == "two-wide-blurs" else chain_steps(hw, steps)
    assert colour_diff(chain(img, s, "cuda"), chain(img, s, "cpu")) <= 1, rng


def test_random_cases_gpu_equal_cpu(rng):
    # Sizes, channels, operations and parameters drawn afresh on every run.
    g = rng.gen
    for _ in range(60):
        h, w = (int(v) for v in g.integers(1, 300, 2))
        img = rng.image(h, w, [None, 1, 3, 4][g.integers(4)])
        op = g.integers(3)
        if op == 0:
            size = tuple(int(v) for v in g.integers(1, 2 * max(h, w) + 2, 2))
            f = fastimg.FILTERS[g.integers(len(fastimg.FILTERS))]
            case = (size, f)
            got = fastimg.resize(img, size, filter=f, backend="cuda")
            want = fastimg.resize(img, size, filter=f, backend="cpu")
        elif op == 1:
            sigma = float(np.exp(g.uniform(np.log(0.3), np.log(200.0))))
            case = sigma
            got, want = (fastimg.gaussian_blur(img, sigma, backend=b) for b in ("cuda", "cpu"))
        else:
            levels, dither = int(g.integers(2, 257)), bool(g.integers(2))
            case = (levels, dither)
            got = fastimg.quantize(img, levels, dither=dither, backend="cuda")
            np.testing.assert_array_equal(got, fastimg.quantize(img, levels, dither=dither, backend="cpu"))
            continue
        assert colour_diff(got, want) <= 1, (rng, img.shape, case)


def test_more_geometries_than_the_caches_hold(rng):
    # Passes are built once per geometry and kept for the 64 most recent ones,
    # on the host and on the device: 70 in turn, then the first ones again.
    img = rng.image(23, 31, 3)
    sizes = [(w, 9) for w in range(1, 71)] + [(w, 9) for w in range(1, 4)]
    for size in sizes:
        want = ref.resize(img, size, "lanczos3")
        assert colour_diff(fastimg.resize(img, size, backend="cuda"), want) <= 1, size


def test_image_without_copy_on_gpu_is_uploaded(rng):
    # copy=False shares the array on the CPU only; on CUDA it is uploaded.
    img = rng.image(37, 53, 3)
    gpu = fastimg.Image(img, backend="cuda", copy=False)
    want = fastimg.resize(img, (20, 11), backend="cpu")
    img[:] = 255 - img
    assert colour_diff(gpu.resize((20, 11)).numpy(), want) <= 1


# Copies go through two 4 MiB pinned buffers per thread, a chunk at a time:
# one byte, one chunk exactly, one byte more (5 x 838861), three and four.
@pytest.mark.parametrize("shape", [(1, 1, 1), (2048, 2048, 1), (5, 838861, 1), (1543, 1811, 3), (1201, 2999, 4)])
def test_copies_of_any_number_of_chunks_arrive_whole(rng, shape):
    img = rng.image(*shape)
    on_gpu = fastimg.Image(img, backend="cuda")
    np.testing.assert_array_equal(on_gpu.numpy(), img)
    # The upload on its own: a kernel reads it, and quantize is exact.
    got = on_gpu.quantize(7, dither=True).numpy()
    np.testing.assert_array_equal(got, fastimg.quantize(img, 7, dither=True, backend="cpu"))


@pytest.mark.parametrize("name", PHOTOS)
def test_photos_gpu_equals_cpu(name):
    img = load_photo(name)
    if EMULATED:
        img = np.ascontiguousarray(img[:300, :400])
    h, w = img.shape[:2]
    src = fastimg.Image(img, backend="cuda")
    assert src.backend == "cuda"
    for size in ((w // 5, h // 5), (w * 2, h * 2)):
        assert colour_diff(src.resize(size).numpy(), fastimg.resize(img, size, backend="cpu")) <= 1
    for sigma in (4.0, 12.8):  # one stage; two (the coarse grid)
        assert colour_diff(src.gaussian_blur(sigma).numpy(), fastimg.gaussian_blur(img, sigma, backend="cpu")) <= 1


@pytest.mark.parametrize("op", ["resize", "blur", "wide-blur", "quantize"])
def test_gpu_writes_every_pixel(rng, op):
    img = rng.image(301, 257, 4)
    outs = []
    for poison in (0, 255):
        out = np.full((77, 91, 4) if op == "resize" else img.shape, poison, np.uint8)
        if op == "resize":
            fastimg.resize(img, (91, 77), backend="cuda", out=out)
        elif op in ("blur", "wide-blur"):
            fastimg.gaussian_blur(img, 2.0 if op == "blur" else 11.0, backend="cuda", out=out)
        else:
            fastimg.quantize(img, 7, backend="cuda", out=out)
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_gpu_alpha_edges_keep_their_colour():
    small = fastimg.Image(red_disc_on_transparent(), backend="cuda").resize((57, 57)).gaussian_blur(3.0).numpy()
    visible = small[..., 3] > 0
    assert (small[visible][:, :3] == (255, 0, 0)).all()


def test_gpu_threads_each_get_correct_results(rng):
    # Each thread has its own default stream; results must not mix.
    imgs = [rng.image(*((120, 160) if EMULATED else (640, 480)), 3) for _ in range(8)]
    want = [fastimg.resize(i, (200, 150), backend="cpu") for i in imgs]
    got: list = [None] * len(imgs)

    def work(k: int) -> None:
        for _ in range(5):
            got[k] = fastimg.Image(imgs[k], backend="cuda").resize((200, 150)).numpy()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(imgs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want, strict=True):
        assert colour_diff(g, w) <= 1


def run_threads(work, args: list) -> None:
    """Runs work(arg) on one thread per arg, all at once, and re-raises the first failure."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(args))

    def guarded(arg) -> None:
        try:
            start.wait()
            work(arg)
        except BaseException as e:  # noqa: BLE001 - re-raised on the test's thread
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(a,)) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# An Image's device memory is written on the stream of the thread that made it
# and used on the streams of others: each use must wait for that write.
CROSS_THREAD_OPS = {
    "resize": lambda img: img.resize((41, 29), filter="bicubic"),
    "blur": lambda img: img.gaussian_blur(3.0),
    "wide-blur": lambda img: img.gaussian_blur(9.0),
    "quantize": lambda img: img.quantize(6, dither=True),
    "download": lambda img: img,
}


def test_image_uploaded_on_one_thread_is_used_on_others(rng):
    # Large on a GPU, so that the copies are still in flight when the users start.
    pixels = [rng.image(*((97, 131) if EMULATED else LARGE), c) for c in CHANNELS]
    on_cpu = [fastimg.Image(p, backend="cpu") for p in pixels]
    want = {(k, name): op(img).numpy() for k, img in enumerate(on_cpu) for name, op in CROSS_THREAD_OPS.items()}
    uploaded: list = []
    run_threads(lambda _: uploaded.extend(fastimg.Image(p, backend="cuda") for p in pixels), [0])
    got: dict = {}

    def use(name: str) -> None:
        for k, img in enumerate(uploaded):
            got[k, name] = CROSS_THREAD_OPS[name](img).numpy()

    run_threads(use, list(CROSS_THREAD_OPS))
    for key, w in want.items():
        if key[1] in ("quantize", "download"):
            np.testing.assert_array_equal(got[key], w, err_msg=str(key))
        else:
            assert colour_diff(got[key], w) <= 1, key


def test_image_made_on_one_thread_is_chained_and_freed_on_others(rng):
    # A result made on one thread is the input of the next, and the last
    # reference to each is dropped on yet another thread (freed on its stream).
    pixels = rng.image(83, 67, 4)
    images = [fastimg.Image(pixels, backend="cuda")]
    steps = [lambda i: i.quantize(9), lambda i: i.gaussian_blur(2.0), lambda i: i.resize((50, 61))]
    for step in steps:
        run_threads(lambda _, step=step: images.append(step(images[-1])), [0])
    result = images[-1].numpy()
    run_threads(lambda _: images.clear(), [0])
    want = fastimg.Image(pixels, backend="cpu")
    for step in steps:
        want = step(want)
    assert colour_diff(result, want.numpy()) <= 1
