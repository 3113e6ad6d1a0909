"""GPU kernel throughput on a 12 MP RGB image: ``python bench/gpu_bench.py``.

Images stay on the device (``fastimg.Image``), so each timing covers the
kernels plus their per-call launch, allocation from the pool and
synchronisation, not the bus (the weight tables are on the device after the
warm-up call). Bandwidth counts the bytes each operation must read and write
once; the device's own copy bandwidth (a device-to-device copy, timed with
CUDA events through PyTorch when it is installed) is the yardstick. The
upload and download rows time the bus instead (through the pinned staging
buffers), beside PyTorch's copy from and to a pageable tensor.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import make_12mp

import fastimg


def median_seconds(fn, reps: int = 30) -> float:
    fn()  # warm-up: allocator pools, module load
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidth(nbytes: int):
    try:
        import torch
    except ImportError:
        return None
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


def torch_side_by_side(img: np.ndarray):
    try:
        import torch
        import torch.nn.functional as F  # noqa: N812 - PyTorch's own spelling
    except ImportError:
        print("PyTorch not installed: no side-by-side")
        return []
    x = torch.from_numpy(img).cuda().permute(2, 0, 1)[None].float()
    rows = []
    pageable = torch.from_numpy(img)
    on_device = pageable.cuda()

    def upload():
        pageable.cuda()
        torch.cuda.synchronize()

    def download():
        on_device.cpu()

    rows.append(("torch upload 12MP (pageable)", median_seconds(upload)))
    rows.append(("torch download 12MP (pageable)", median_seconds(download)))

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

    rows.append(("torch interpolate bicubic aa -> 320", median_seconds(resize)))
    rows.append(("torch conv2d gaussian sigma 8", median_seconds(blur)))
    return rows


def main() -> None:
    info = fastimg.backends()
    if info.default != "cuda":
        sys.exit(f"no GPU: {info.cuda_reason}")
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
    ]
    copy = copy_bandwidth(n)
    print(f"device: {info.cuda_device}")
    print(f"copy bandwidth (device to device): {copy / 1e9:.0f} GB/s" if copy else "copy bandwidth: n/a (no PyTorch)")
    print(f"{'operation':<38} {'median ms':>10} {'GB/s':>8} {'% of copy':>10}")
    for name, fn, nbytes in ops:
        t = median_seconds(fn)
        bw = nbytes / t
        share = f"{100 * bw / copy:.0f}%" if copy else "n/a"
        print(f"{name:<38} {t * 1e3:>10.3f} {bw / 1e9:>8.0f} {share:>10}")
    bus = [
        ("upload 12MP (host to device)", lambda: fastimg.Image(img, backend="cuda")),
        ("download 12MP (device to host)", src.numpy),
    ]
    for name, fn in bus:
        t = median_seconds(fn)
        print(f"{name:<38} {t * 1e3:>10.3f} {n / t / 1e9:>8.1f} {'bus':>10}")
    for name, t in torch_side_by_side(img):
        print(f"{name:<38} {t * 1e3:>10.3f}")


if __name__ == "__main__":
    main()
