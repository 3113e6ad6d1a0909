"""fastimg's CPU kernels beside pyvips, OpenCV and Pillow: ``python bench/peers.py``.

The five operations of the kernel goals on the 12 MP benchmark photo
(bench/conftest.py), numpy in and numpy out for every contender. Each engine
(``--engines``, default every one this CPU runs) is measured in a process of
its own, since ``FASTIMG_CPU_TARGET`` is read once.

``--cores 1`` (default): the process is pinned to one core, OpenCV and libvips
are told to use one thread, and each call is timed by the process's CPU time.
``--cores all``: nothing is pinned, the peers use their default thread counts,
fastimg is called with ``threads=0`` (every core), and calls are timed by the
wall clock.

Contenders are interleaved (one call of each in turn, ``--reps`` rounds after
a warm-up round) and the tables give medians. fastimg and OpenCV write into an
output array made once and reused (``out=``, ``dst=``); pyvips and Pillow
cannot, and allocate their outputs every call; "fastimg, new array" shows what
a fresh output costs. A warm ``np.copyto`` of the image is interleaved too,
as the core's copy bandwidth: GB/s counts the bytes read plus the bytes
written, for the copy and the kernels alike.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from conftest import make_12mp  # noqa: E402

ENGINES = ("x86-64-v4", "x86-64-v3", "baseline")
PEERS = ("pyvips", "OpenCV")  # the goal is against the faster of these
OPS = ("resize 320x240", "resize 1280x960", "blur sigma 2", "blur sigma 8", "quantize 32")
SIZES = {"resize 320x240": (320, 240), "resize 1280x960": (1280, 960)}
SIGMAS = {"blur sigma 2": 2.0, "blur sigma 8": 8.0}
LEVELS = 32


@dataclass
class Contender:
    name: str
    call: Callable[[], object]
    reused: bool  # writes into an output array made once
    shape: tuple[int, ...] | None = None  # of what call returns, checked once
    times: list[float] = field(default_factory=list)


def quantize_table(levels: int) -> np.ndarray:
    """fastimg's quantisation without dithering as a 256-entry table."""
    v = np.arange(256)
    n = levels - 1
    index = (v * n * 128 + 64 * 255) // (128 * 255)
    return ((index * 510 + n) // (2 * n)).astype(np.uint8)


def contenders(op: str, img: np.ndarray, threads: int) -> list[Contender]:
    """Every installed library's version of ``op`` on ``img``; ``threads`` is
    passed to fastimg when it takes it (1: one core)."""
    import fastimg

    kw: dict = {"backend": "cpu"}
    if "threads" in inspect.signature(fastimg.resize).parameters:
        kw["threads"] = threads
    out: list[Contender] = []
    h, w = img.shape[:2]
    shape = (SIZES[op][::-1] + img.shape[2:]) if op in SIZES else img.shape
    if op in SIZES:
        size = SIZES[op]
        dst = np.empty(size[::-1] + img.shape[2:], np.uint8)
        out.append(Contender("fastimg", lambda: fastimg.resize(img, size, out=dst, **kw), True))
        out.append(Contender("fastimg, new array", lambda: fastimg.resize(img, size, **kw), False))
    elif op in SIGMAS:
        sigma = SIGMAS[op]
        dst = np.empty_like(img)
        out.append(Contender("fastimg", lambda: fastimg.gaussian_blur(img, sigma, out=dst, **kw), True))
        out.append(Contender("fastimg, new array", lambda: fastimg.gaussian_blur(img, sigma, **kw), False))
    else:
        dst = np.empty_like(img)
        out.append(Contender("fastimg", lambda: fastimg.quantize(img, LEVELS, out=dst, **kw), True))
        out.append(Contender("fastimg, new array", lambda: fastimg.quantize(img, LEVELS, **kw), False))
    table = quantize_table(LEVELS)

    try:
        import pyvips
    except (ImportError, OSError):
        pass
    else:
        pyvips.cache_set_max(0)  # every call computes
        lut = pyvips.Image.new_from_array(table[None, :])

        def vips(f: Callable) -> Callable[[], object]:
            return lambda: f(pyvips.Image.new_from_array(img)).numpy()

        if op in SIZES:
            sx, sy = SIZES[op][0] / w, SIZES[op][1] / h
            call = vips(lambda v: v.resize(sx, vscale=sy, kernel="lanczos3"))
        elif op in SIGMAS:
            call = vips(lambda v: v.gaussblur(SIGMAS[op]))
        else:
            call = vips(lambda v: v.maplut(lut))
        out.append(Contender("pyvips", call, False, shape))

    try:
        import cv2
    except ImportError:
        pass
    else:
        dst2 = np.empty_like(dst)
        if op in SIZES:
            call = lambda: cv2.resize(img, SIZES[op], dst=dst2, interpolation=cv2.INTER_AREA)  # noqa: E731
        elif op in SIGMAS:
            k = 2 * int(np.ceil(3 * SIGMAS[op])) + 1  # fastimg's truncation: radius ceil(3 sigma)
            call = lambda: cv2.GaussianBlur(img, (k, k), SIGMAS[op], dst=dst2, borderType=cv2.BORDER_REFLECT)  # noqa: E731
        else:
            call = lambda: cv2.LUT(img, table, dst=dst2)  # noqa: E731
        out.append(Contender("OpenCV", call, True, shape))

    from PIL import Image, ImageFilter

    def pil(f: Callable) -> Callable[[], object]:
        return lambda: np.asarray(f(Image.fromarray(img)))

    if op in SIZES:
        call = pil(lambda im: im.resize(SIZES[op], Image.LANCZOS))
    elif op in SIGMAS:
        call = pil(lambda im: im.filter(ImageFilter.GaussianBlur(SIGMAS[op])))
    else:
        call = pil(lambda im: im.point(table.tolist() * len(im.getbands())))
    out.append(Contender("Pillow", call, False, shape))
    for c in out[:2]:
        c.shape = shape
    return out


def set_peer_threads(cores: str) -> None:
    """One thread for OpenCV and libvips (``cores == "1"``), else their defaults."""
    if cores != "1":
        return
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    try:
        import pyvips

        pyvips.concurrency_set(1)
    except (ImportError, OSError):
        pass


def interleave(group: list[Contender], reps: int, clock: Callable[[], float]) -> None:
    """One call of each contender per round; the first round is a warm-up,
    which also checks the shape of what each returns."""
    for r in range(reps + 1):
        for c in group:
            t0 = clock()
            got = c.call()
            t = clock() - t0
            if r:
                c.times.append(t * 1000)
            elif c.shape is not None and np.shape(got) != c.shape:
                raise AssertionError(f"{c.name} returned shape {np.shape(got)}, not {c.shape}")


def measure(img: np.ndarray, ops: tuple[str, ...], reps: int, cores: str) -> dict:
    """Medians in ms per op and contender, which contenders wrote to reused
    arrays, and the times of the copy interleaved with them."""
    threads = 1 if cores == "1" else 0
    clock = time.process_time if cores == "1" else time.perf_counter
    copy_dst = np.empty_like(img)
    result: dict = {"ops": {}, "reused": {}, "copies": []}
    for op in ops:
        group = contenders(op, img, threads)
        group.append(Contender("copy", lambda: np.copyto(copy_dst, img), True))
        interleave(group, reps, clock)
        result["ops"][op] = {c.name: statistics.median(c.times) for c in group if c.name != "copy"}
        result["reused"].update({c.name: c.reused for c in group if c.name != "copy"})
        result["copies"] += group[-1].times
    return result


def merge(results: list[dict]) -> dict:
    """One result of the ops measured in several."""
    out: dict = {"ops": {}, "reused": {}, "copies": []}
    for r in results:
        out["ops"].update(r["ops"])
        out["reused"].update(r["reused"])
        out["copies"] += r["copies"]
    return out


@contextlib.contextmanager
def one_core() -> Iterator[None]:
    """This process on one CPU, and the peers told to use one thread."""
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {max(cpus)})
    set_peer_threads("1")
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)


def output_bytes(op: str, img: np.ndarray) -> int:
    if op in SIZES:
        w, h = SIZES[op]
        return w * h * (img.size // (img.shape[0] * img.shape[1]))
    return img.size


def table(result: dict, img: np.ndarray) -> str:
    """The ratio table: medians in ms, the fastest peer over fastimg, and GB/s."""
    names = [n for n in ("fastimg", "fastimg, new array", "pyvips", "OpenCV", "Pillow") if n in result["reused"]]
    copy_ms = statistics.median(result["copies"])
    copy_gbs = 2 * img.size / copy_ms / 1e6
    head = "| op | " + " | ".join(names) + " | fastest peer / fastimg | fastimg GB/s (copy's share) |"
    lines = [head, "|" + "---|" * (len(names) + 3)]
    for op, ms in result["ops"].items():
        peers = [ms[p] for p in PEERS if p in ms]
        ratio = f"{min(peers) / ms['fastimg']:.2f}x" if peers else "no peer"
        gbs = (img.size + output_bytes(op, img)) / ms["fastimg"] / 1e6
        cells = " | ".join(f"{ms[n]:.1f}" for n in names)
        lines.append(f"| {op} | {cells} | {ratio} | {gbs:.1f} ({100 * gbs / copy_gbs:.0f}%) |")
    reused = ", ".join(n for n in names if result["reused"][n])
    fresh = ", ".join(n for n in names if not result["reused"][n])
    lines.append(
        f"\nms, medians; copy of the image {copy_ms:.2f} ms = {copy_gbs:.1f} GB/s (read + written). "
        f"Reused output arrays: {reused}; a new array each call: {fresh}."
    )
    return "\n".join(lines)


def child(args: argparse.Namespace) -> None:
    if args.cores == "1":
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    set_peer_threads(args.cores)
    import fastimg

    engine = fastimg.backends().cpu_target
    if engine != os.environ.get("FASTIMG_CPU_TARGET", engine):
        print(json.dumps({"engine": engine, "skipped": True}))
        return
    img = make_12mp()
    result = measure(img, tuple(args.ops.split(",")), args.reps, args.cores)
    print(json.dumps({"engine": engine, **result}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated FASTIMG_CPU_TARGET values")
    ap.add_argument("--cores", choices=("1", "all"), default="1")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--ops", default=",".join(OPS), help=f"comma-separated, of: {', '.join(OPS)}")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    img = make_12mp()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"{cpu}, {args.cores} core(s), {args.reps} rounds, 12 MP RGB ({img.shape[1]}x{img.shape[0]})")
    results = []
    for engine in args.engines.split(","):
        cmd = [sys.executable, __file__, "--child", "--cores", args.cores, "--reps", str(args.reps), "--ops", args.ops]
        out = subprocess.run(cmd, env={**os.environ, "FASTIMG_CPU_TARGET": engine}, stdout=subprocess.PIPE, text=True)
        if out.returncode:
            raise SystemExit(f"the {engine} run failed with {out.returncode}")
        r = json.loads(out.stdout)
        if r.get("skipped"):
            print(f"\n{engine}: not supported by this CPU (it runs {r['engine']}), skipped")
            continue
        results.append(r)
        print(f"\nfastimg engine {engine}\n\n{table(r, img)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
