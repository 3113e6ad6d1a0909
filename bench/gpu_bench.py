"""GPU kernel throughput on a 12 MP RGB image: ``python bench/gpu_bench.py [--table FILE]``.

Images stay on the device (``fastimg.Image``). Two figures per operation:

* per call: the median wall time of the Python call, which adds to the
  kernels the call's own work (plan lookup, stream ordering, allocation from
  the pool, launch, synchronisation; the plans and weight tables are cached
  after the warm-up call);
* events: the device time between CUDA events that fastimg records on its
  stream right before the call's first kernel and after its last
  (``_core.cuda_time_kernels``): the kernels, plus the few microseconds the
  first launch takes to reach an idle GPU;
* kernels: the device time of the kernels alone, from the CUDA activity
  records of the PyTorch profiler (CUPTI, which sees every kernel of the
  process, fastimg's included), divided by the number of calls.

Bandwidth counts the bytes each operation must read and write once (input
plus output); the yardstick is the device's own copy bandwidth, a
device-to-device copy of the same image timed with CUDA events (read plus
write). The upload and download rows time the bus instead (through the pinned
staging buffers), beside PyTorch's copies from and to a pageable tensor.
``--table FILE`` also writes the summary table to FILE.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import make_12mp

import fastimg

REPS = 20


def median_seconds(fn, reps: int = REPS) -> float:
    fn()  # warm-up: allocator pools, plans, weight tables
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidth(torch, nbytes: int) -> float:
    """Bytes read plus written per second by a device-to-device copy."""
    a = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    b.copy_(a)
    times = []
    for _ in range(20):
        start.record()
        b.copy_(a)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * nbytes / statistics.median(times)


def event_seconds(fn, reps: int = REPS) -> float:
    """Device seconds per call between fastimg's events around its kernels."""
    fn()
    fastimg._core.cuda_kernel_ms()
    fastimg._core.cuda_time_kernels(True)
    try:
        for _ in range(reps):
            fn()
        return fastimg._core.cuda_kernel_ms() / 1e3 / reps
    finally:
        fastimg._core.cuda_time_kernels(False)


def kernel_seconds(torch, fn, reps: int = REPS) -> tuple[float, float]:
    """(device seconds of kernels per call, kernels per call), from CUPTI records."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA and "memcpy" not in e.name.lower()]
    if not kernels:
        return float("nan"), 0.0
    return sum(e.time_range.elapsed_us() for e in kernels) / 1e6 / reps, len(kernels) / reps


def torch_side_by_side(torch, img: np.ndarray) -> list[tuple[str, float]]:
    import torch.nn.functional as F  # noqa: N812 - PyTorch's own spelling

    x = torch.from_numpy(img).cuda().permute(2, 0, 1)[None].float()
    pageable = torch.from_numpy(img)
    on_device = pageable.cuda()

    def upload():
        pageable.cuda()
        torch.cuda.synchronize()

    def resize():
        F.interpolate(x, size=(240, 320), mode="bicubic", antialias=True).clamp_(0, 255).to(torch.uint8)
        torch.cuda.synchronize()

    sigma = 8.0
    r = int(np.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, device="cuda") / sigma) ** 2)
    k = (k / k.sum()).float()
    kh = k.view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    kv = k.view(1, 1, -1, 1).repeat(3, 1, 1, 1)

    def blur():
        y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), kh, groups=3)
        F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), kv, groups=3).round_().clamp_(0, 255).to(torch.uint8)
        torch.cuda.synchronize()

    return [
        ("torch upload 12MP (pageable)", median_seconds(upload)),
        ("torch download 12MP (pageable)", median_seconds(on_device.cpu)),
        ("torch interpolate bicubic aa -> 320", median_seconds(resize)),
        ("torch conv2d gaussian sigma 8", median_seconds(blur)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, help="also write the summary table here")
    args = parser.parse_args()
    info = fastimg.backends()
    if info.default != "cuda":
        sys.exit(f"no GPU: {info.cuda_reason}")
    try:
        import torch
    except ImportError:
        torch = None
    img = make_12mp()
    src = fastimg.Image(img, backend="cuda")
    n = img.nbytes
    ops = [
        ("resize 12MP -> 320 lanczos3", lambda: src.resize((320, 240)), n + 320 * 240 * 3),
        ("resize 12MP -> 1280 lanczos3", lambda: src.resize((1280, 960)), n + 1280 * 960 * 3),
        ("blur sigma 2", lambda: src.gaussian_blur(2.0), 2 * n),
        ("blur sigma 8", lambda: src.gaussian_blur(8.0), 2 * n),
        ("blur sigma 30", lambda: src.gaussian_blur(30.0), 2 * n),
        ("quantize 32", lambda: src.quantize(32), 2 * n),
        ("quantize 32 dithered", lambda: src.quantize(32, dither=True), 2 * n),
    ]
    copy = copy_bandwidth(torch, n) if torch else None
    lines = [f"device: {info.cuda_device}"]
    lines.append(f"copy bandwidth (device to device, read + write): {copy / 1e9:.0f} GB/s" if copy else "copy: n/a")
    lines.append("kernel GB/s: input + output bytes over the kernels' time (CUPTI's, else the events')")
    head = (
        f"{'operation':<32} {'call ms':>8} {'events ms':>10} {'kernel ms':>10} {'kernels':>8}"
        f" {'kernel GB/s':>12} {'% of copy':>10}"
    )
    lines += [head, "-" * len(head)]
    for name, fn, nbytes in ops:
        call = median_seconds(fn)
        events = event_seconds(fn)
        kernel, count = kernel_seconds(torch, fn) if torch else (float("nan"), 0.0)
        bw = nbytes / (kernel if kernel == kernel else events)
        share = f"{100 * bw / copy:.0f}%" if copy else "n/a"
        lines.append(
            f"{name:<32} {call * 1e3:>8.3f} {events * 1e3:>10.3f} {kernel * 1e3:>10.3f} {count:>8.1f}"
            f" {bw / 1e9:>12.0f} {share:>10}"
        )
    for name, fn in [
        ("upload 12MP (host to device)", lambda: fastimg.Image(img, backend="cuda")),
        ("download 12MP (device to host)", src.numpy),
    ]:
        t = median_seconds(fn)
        lines.append(f"{name:<32} {t * 1e3:>8.3f} {'':>10} {'':>10} {'':>8} {n / t / 1e9:>12.1f} {'bus':>10}")
    if torch:
        for name, t in torch_side_by_side(torch, img):
            lines.append(f"{name:<32} {t * 1e3:>8.3f}")
    table = "\n".join(lines)
    print(table)
    if args.table:
        args.table.write_text(table + "\n")


if __name__ == "__main__":
    main()
