"""What only the host emulation of the CUDA source (FASTIMG_CUDA=EMU) can
provoke: out-of-memory at every allocation, a memory limit, a sticky device
error, a GPU without a kernel image for it, a missing wait between streams,
and a pinned buffer reused before its copy ran. tests/emu/run.sh runs these
under ASan and UBSan; any other build skips them."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from test_kernels import chain, colour_diff

import fastimg
from fastimg import _core

pytestmark = pytest.mark.skipif(
    not _core.cuda_status()["emulated"], reason="not the host emulation build (FASTIMG_CUDA=EMU)"
)

# Each operation as the worker uses them, on one backend.
OPERATIONS = {
    "resize": lambda img, b: fastimg.resize(img, (23, 41), filter="bicubic", backend=b),
    "blur": lambda img, b: fastimg.gaussian_blur(img, 2.0, backend=b),
    "wide-blur": lambda img, b: fastimg.gaussian_blur(img, 9.0, backend=b),
    "four-stages": lambda img, b: chain(img, [("blur", 7.0), ("blur", 6.0)], b),
    "quantize": lambda img, b: fastimg.quantize(img, 5, dither=True, backend=b),
    "image-chain": lambda img, b: fastimg.Image(img, backend=b).resize((31, 22)).gaussian_blur(1.5).numpy(),
}


@pytest.mark.parametrize("op", OPERATIONS)
def test_out_of_memory_at_each_allocation(rng, monkeypatch, op):
    img = rng.image(45, 67, 4)
    run = OPERATIONS[op]
    want = run(img, "cpu")
    for k in itertools.count(1):
        monkeypatch.setenv("FASTIMG_EMU_OOM_AT", str(k))  # the k-th allocation from now fails
        try:
            got = run(img, "cuda")
        except fastimg.DeviceOutOfMemory as e:
            assert isinstance(e, MemoryError) and isinstance(e, fastimg.KernelError)
            assert "cudaErrorMemoryAllocation" in str(e) and re.search(r"cuda_\w+\.cu:\d+", str(e))
        else:
            # Fewer than k allocations: each of them has failed once.
            assert k > 2
            assert colour_diff(got, want) <= 1
            break
        # The error is not left behind for the next, valid call.
        monkeypatch.setenv("FASTIMG_EMU_OOM_AT", "0")
        assert colour_diff(run(img, "cuda"), want) <= 1, k
    assert fastimg.backends().default == "cuda"


def allocations_of(call, monkeypatch) -> int:
    """How many device allocations `call` makes: the k-th failing for k = 1, 2, ...
    until the call succeeds. Only for calls whose failures change nothing cached."""
    for k in itertools.count(1):
        monkeypatch.setenv("FASTIMG_EMU_OOM_AT", str(k))
        try:
            call()
        except fastimg.DeviceOutOfMemory:
            continue
        finally:
            monkeypatch.setenv("FASTIMG_EMU_OOM_AT", "0")
        return k - 1
    raise AssertionError("unreachable")


def test_weight_tables_are_uploaded_once_per_geometry(rng, monkeypatch):
    img = rng.image(45, 67, 3)

    def resize() -> np.ndarray:
        return fastimg.resize(img, (23, 41), backend="cuda")

    resize()  # puts this geometry's tables on the device
    # From then on a call allocates its images only, source and result: the
    # two passes of a stage meet in shared memory, not in device memory.
    assert allocations_of(resize, monkeypatch) == 2
    assert colour_diff(resize(), fastimg.resize(img, (23, 41), backend="cpu")) <= 1


def test_tables_of_geometries_no_longer_cached_are_made_again(rng, monkeypatch):
    # The plans of 64 geometries are kept (and their tables on the device):
    # after 69 others, the first geometry's call uploads its tables again.
    img = rng.image(45, 67, 3)

    def resize() -> np.ndarray:
        return fastimg.resize(img, (23, 41), backend="cuda")

    resize()
    warm = allocations_of(resize, monkeypatch)
    for w in range(1, 70):
        fastimg.resize(img, (w, 5), backend="cuda")
    monkeypatch.setenv("FASTIMG_EMU_OOM_AT", str(warm + 1))
    with pytest.raises(fastimg.DeviceOutOfMemory):
        resize()
    monkeypatch.setenv("FASTIMG_EMU_OOM_AT", "0")
    assert colour_diff(resize(), fastimg.resize(img, (23, 41), backend="cpu")) <= 1
    assert allocations_of(resize, monkeypatch) == warm


@pytest.mark.parametrize("k", [2, 3])
def test_a_thread_whose_staging_buffers_cannot_be_made_tries_again(rng, monkeypatch, k):
    # A thread's first copy makes its two pinned buffers: allocations 2 and 3
    # after its image's. One failing is out-of-memory, and the next copy on
    # that thread makes them again.
    img = rng.image(45, 67, 3)
    seen: list = []

    def first_copies() -> None:
        try:
            fastimg.Image(img, backend="cuda")
        except fastimg.DeviceOutOfMemory as e:
            seen.append(e)
        os.environ["FASTIMG_EMU_OOM_AT"] = "0"
        seen.append(fastimg.Image(img, backend="cuda").numpy())

    monkeypatch.setenv("FASTIMG_EMU_OOM_AT", str(k))
    t = threading.Thread(target=first_copies)
    t.start()
    t.join()
    assert isinstance(seen[0], fastimg.DeviceOutOfMemory) and "cudaMallocHost" in str(seen[0])
    np.testing.assert_array_equal(seen[1], img)


def test_device_name_says_emulated():
    info = fastimg.backends()
    assert info.default == "cuda" and "emulation" in info.cuda_device
    assert f"({os.environ.get('FASTIMG_EMU_SMS', '132')} SMs)" in info.describe()


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    # A process of its own: a sticky error lasts as long as the process.
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sticky_error_moves_the_process_to_the_cpu():
    p = run_python("""
        import os
        import numpy as np
        import fastimg

        img = np.random.default_rng(1).integers(0, 256, (40, 50, 3), np.uint8)
        on_gpu = fastimg.Image(img)
        assert on_gpu.backend == "cuda"
        os.environ["FASTIMG_EMU_STICKY_AT"] = "1"  # the next launch faults
        try:
            fastimg.resize(img, (20, 25))
        except fastimg.DeviceLost as e:
            assert isinstance(e, fastimg.KernelError) and not isinstance(e, MemoryError)
            print("raised:", e)
        else:
            raise SystemExit("no DeviceLost")
        info = fastimg.backends()
        assert info.default == "cpu" and info.available == ("cpu",) and info.cuda_lost, info
        assert "cudaErrorIllegalAddress" in info.describe(), info.describe()
        # New work goes to the CPU, with the same results.
        want = fastimg.resize(img, (20, 25), backend="cpu")
        np.testing.assert_array_equal(fastimg.resize(img, (20, 25)), want)
        assert fastimg.Image(img).backend == "cpu"
        # What was on the GPU is gone, and CUDA is not offered again.
        try:
            on_gpu.resize((20, 25))
        except fastimg.DeviceLost:
            pass
        else:
            raise SystemExit("an image on the lost GPU was used")
        try:
            fastimg.resize(img, (20, 25), backend="cuda")
        except fastimg.BackendUnavailableError:
            pass
        else:
            raise SystemExit("CUDA offered after a sticky error")
        print("describe:", info.describe())
    """)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "raised: CUDA error cudaErrorIllegalAddress" in p.stdout


def test_memory_limit():
    # A process of its own, whose device memory holds no cached weight tables.
    p = run_python(
        """
        import numpy as np
        import fastimg

        rng = np.random.default_rng(2)
        big, small = rng.integers(0, 256, (300, 300, 3), np.uint8), rng.integers(0, 256, (50, 50, 3), np.uint8)
        try:
            fastimg.gaussian_blur(big, 3.0, backend="cuda")
        except fastimg.DeviceOutOfMemory as e:
            print("raised:", e)
        else:
            raise SystemExit("no DeviceOutOfMemory")
        got, want = (fastimg.gaussian_blur(small, 3.0, backend=b) for b in ("cuda", "cpu"))
        assert np.abs(got.astype(int) - want).max() <= 1
    """,
        FASTIMG_EMU_MEMORY="200000",
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "raised: CUDA error cudaErrorMemoryAllocation" in p.stdout


def test_no_kernel_image_for_the_device_means_cpu():
    p = run_python(
        """
        import numpy as np
        import fastimg

        info = fastimg.backends()
        print(info.describe())
        assert info.default == "cpu" and info.cuda_compiled and not info.cuda_lost, info
        img = np.zeros((9, 7), np.uint8)
        assert fastimg.resize(img, (3, 4)).shape == (4, 3)
        assert fastimg.Image(img).backend == "cpu"
    """,
        FASTIMG_EMU_NO_KERNEL_IMAGE="1",
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "probe kernel did not run" in p.stdout and "cudaErrorNoKernelImageForDevice" in p.stdout


def test_a_use_on_another_stream_without_the_wait_is_caught():
    # The emulation runs every stream synchronously, so a missing wait computes
    # the right pixels: its ordering check must abort instead.
    script = """
        import threading
        import numpy as np
        import fastimg

        img = fastimg.Image(np.full((9, 7, 3), 80, np.uint8), backend="cuda")
        done = []
        t = threading.Thread(target=lambda: done.append(img.gaussian_blur(1.0).numpy()))
        t.start()
        t.join()
        print("blurred on another thread:", int(done[0].min()), int(done[0].max()))
    """
    ordered = run_python(script)
    assert ordered.returncode == 0, ordered.stdout + ordered.stderr
    assert "blurred on another thread: 80 80" in ordered.stdout
    unordered = run_python(script, FASTIMG_EMU_SKIP_WAITS="1")
    assert unordered.returncode != 0, unordered.stdout + unordered.stderr
    assert "with no event waited for nor synchronisation ordering it" in unordered.stderr


def test_a_pinned_buffer_reused_too_early_is_caught():
    # The emulation defers copies with pinned memory until the host waits for
    # them, so a staging buffer refilled before its copy ran sends the wrong
    # bytes: without the waits, an image of four chunks comes back changed.
    script = """
        import os
        import numpy as np
        import fastimg

        assert fastimg.backends().default == "cuda"  # probed with every wait in place
        os.environ["FASTIMG_EMU_SKIP_EVENT_SYNCS"] = "{skip}"
        img = np.random.default_rng(4).integers(0, 256, (2000, 2300, 3), np.uint8)
        back = fastimg.Image(img, backend="cuda").numpy()
        print("chunks that came back changed:", sum(
            not np.array_equal(a, b) for a, b in zip(np.array_split(back.ravel(), 4), np.array_split(img.ravel(), 4))
        ))
    """
    waited = run_python(script.format(skip=0))
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "came back changed: 0" in waited.stdout
    unwaited = run_python(script.format(skip=1))
    assert unwaited.returncode == 0, unwaited.stdout + unwaited.stderr
    assert "came back changed: 0" not in unwaited.stdout, unwaited.stdout


def test_device_arrays_never_cross_to_the_host(rng, monkeypatch):
    from test_kernels_device import OPERATIONS, WRAPPERS

    img = rng.image(37, 53, 4)
    sources = {name: wrap(fastimg.Image(img, backend="cuda")) for name, wrap in WRAPPERS.items()}
    chain = lambda src: fastimg.gaussian_blur(fastimg.resize(src, (30, None)), 1.5)  # noqa: E731
    # The weight tables of a geometry go up once, whatever the input (a few
    # KB); with them in place, no byte may cross in either direction.
    for run in [*OPERATIONS.values(), chain]:
        run(sources["fastimg-image"])
    monkeypatch.setenv("FASTIMG_EMU_NO_HOST_COPIES", "1")  # any copy to or from the host fails
    with pytest.raises(fastimg.KernelError, match="cudaMemcpyAsync"):
        fastimg.resize(img, (20, 11), backend="cuda")  # a host array must cross: the check holds
    results = {(name, op): run(src) for name, src in sources.items() for op, run in OPERATIONS.items()}
    chained = chain(sources["dlpack"])
    monkeypatch.delenv("FASTIMG_EMU_NO_HOST_COPIES")
    for (name, op), got in results.items():
        want = OPERATIONS[op](img, backend="cpu")
        assert colour_diff(got.numpy(), want) <= (0 if op == "quantize" else 1), (name, op, rng)
    want = fastimg.gaussian_blur(fastimg.resize(img, (30, None), backend="cpu"), 1.5, backend="cpu")
    assert colour_diff(chained.numpy(), want) <= 1, rng
