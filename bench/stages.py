"""Where a 12 MP job's time goes: ``python bench/stages.py [--reps N] [--threads 1,2,4]``.

1. Stage by stage on one core: read, decode (and inside it libjpeg at the
   draft scale, turning the image upright, the copy to numpy), each kernel as
   the worker chains them, each WebP encode.
2. One job's latency in-process, on one core and on all of them.
3. Scaling: the 12 MP job through gpu-image-worker -workers 1 and 2 (jobs per
   second over a batch), against the machine's ceiling: as many in-process
   pipelines as there are cores, each pinned to its own core, side by side.
   With ``--threads``, instead: the pipeline on that many threads at once, as
   the worker's slots run it (no Redis needed: this is the GPU machine's
   check, bench/gpu_check.sh), with the kernels' share of each job's time.

Each measurement runs in a fresh process whose CPUs are fixed before any
thread starts (threads inherit them), with the worker's malloc settings.
Inputs are bench/e2e.py's.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]
from e2e import OPS, make_inputs, median_ms, run_fastimg, worker_run  # noqa: E402


def warm_median_ms(fn, reps: int) -> float:
    fn()  # first use: imports, allocations
    return median_ms(fn, reps)


def child_stages(path: Path, reps: int) -> dict:
    import numpy as np
    from PIL import Image, ImageOps

    import fastimg
    from fastimg.image.decode import decode
    from fastimg.image.limits import Limits
    from fastimg.image.read import read_input
    from fastimg.image.spec import SPEC_V1
    from fastimg.image.write import encode_webp

    specs = [SPEC_V1[op] for op in OPS]
    data = path.read_bytes()
    px = decode(data, specs, Limits())
    h, w = px.shape[:2]

    def draft_and_load():
        im = Image.open(io.BytesIO(data))
        turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # stored sideways
        im.draft("RGB", (h, w) if turned else (w, h))
        im.load()
        return im

    loaded = draft_and_load()
    upright = ImageOps.exif_transpose(loaded)
    src = fastimg.Image(px, copy=False)
    big = src.resize((1280, 1280 * h // w))
    mid = big.resize((640, 640 * h // w))
    sizes = {"low-quality": big, "blur": mid.gaussian_blur(0.02 * 640), "thumbnail": mid.resize((320, 320 * h // w))}
    out = {
        "read": warm_median_ms(lambda: read_input(str(path), Limits()), reps),
        "decode": warm_median_ms(lambda: decode(data, specs, Limits()), reps),
        "  libjpeg at the draft scale": warm_median_ms(draft_and_load, reps),
        "  turning upright": warm_median_ms(lambda: ImageOps.exif_transpose(loaded), reps),
        "  to numpy": warm_median_ms(lambda: np.asarray(upright), reps),
        "resize to 1280": warm_median_ms(lambda: src.resize((1280, 1280 * h // w)), reps),
        "quantise 1280": warm_median_ms(lambda: big.quantize(32), reps),
        "resize 1280 -> 640": warm_median_ms(lambda: big.resize((640, 640 * h // w)), reps),
        "blur 640": warm_median_ms(lambda: mid.gaussian_blur(0.02 * 640), reps),
        "resize 640 -> 320": warm_median_ms(lambda: mid.resize((320, 320 * h // w)), reps),
    }
    for op, img in sizes.items():
        pixels = img.numpy()
        out[f"encode {op} ({pixels.shape[1]} wide)"] = warm_median_ms(
            lambda p=pixels, s=SPEC_V1[op]: encode_webp(p, s), reps
        )
    return out


def child_loop(path: Path, reps: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        return {"ms": warm_median_ms(lambda: run_fastimg(path, Path(d)), reps)}


def child_threads(path: Path, reps: int, threads: int) -> dict:
    """ms per job with ``threads`` jobs at a time, and the kernels' share."""
    from fastimg.image.limits import Limits
    from fastimg.image.pipeline import encoder_pool, process
    from fastimg.queue.jobs import parse_job

    encoders = encoder_pool()
    with tempfile.TemporaryDirectory() as d:
        job = parse_job(
            json.dumps({"jobId": path.stem, "inputPath": str(path), "outputDir": d, "operations": list(OPS)})
        )
        process(job, Limits(), encoders=encoders)
        shares: list = []

        def loop() -> None:
            for _ in range(reps):
                t0 = time.perf_counter()
                kernels = process(job, Limits(), encoders=encoders).timings_ms["kernels"]
                shares.append(kernels / ((time.perf_counter() - t0) * 1000))

        workers = [threading.Thread(target=loop) for _ in range(threads)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        ms = (time.perf_counter() - t0) * 1000 / (threads * reps)
        if len(shares) != threads * reps:
            raise SystemExit("a thread failed (its traceback is above)")
        return {"ms": ms, "kernels": statistics.median(shares)}


def spawn(kind: str, path: Path, reps: int, cpus, threads: int = 1) -> subprocess.Popen:
    arg = json.dumps({"kind": kind, "path": str(path), "reps": reps, "cpus": list(cpus), "threads": threads})
    return subprocess.Popen([sys.executable, __file__, "--child", arg], stdout=subprocess.PIPE, text=True)


def result(p: subprocess.Popen) -> dict:
    out, _ = p.communicate()
    if p.returncode:
        raise SystemExit(f"child failed with {p.returncode}")
    return json.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", help="comma-separated thread counts for part 3 (instead of the worker)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        c = json.loads(args.child)
        os.sched_setaffinity(0, c["cpus"])
        from fastimg.worker.allocator import tune_malloc

        tune_malloc()  # as the worker runs
        if c["kind"] == "threads":
            print(json.dumps(child_threads(Path(c["path"]), c["reps"], c["threads"])))
        else:
            fn = child_stages if c["kind"] == "stages" else child_loop
            print(json.dumps(fn(Path(c["path"]), c["reps"])))
        return
    cpus = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        path = make_inputs(d)["12 MP JPEG"][0]
        print(f"12 MP JPEG, medians of {args.reps}, ms")
        print("\n1. stage by stage, one core")
        for name, ms in result(spawn("stages", path, args.reps, cpus[:1])).items():
            print(f"  {name:<34} {ms:7.1f}")

        one = result(spawn("loop", path, args.reps, cpus[:1]))["ms"]
        every = result(spawn("loop", path, args.reps, cpus))["ms"]
        print(f"\n2. one job in-process: one core {one:.1f}, {len(cpus)} cores {every:.1f} ({every / one:.2f}x)")

        if args.threads:
            print("\n3. jobs at a time, in-process on all cores (ms per job; kernels' median share of a job)")
            base = None
            for n in (int(v) for v in args.threads.split(",")):
                r = result(spawn("threads", path, max(2, args.reps // n), cpus, n))
                base = base or r["ms"]
                print(
                    f"  {n:>3} at a time: {r['ms']:7.1f} ms per job ({base / r['ms']:5.2f}x the jobs/s of one "
                    f"at a time), kernels {100 * r['kernels']:4.1f}% of a job"
                )
            return
        print("\n3. scaling (ms per job over a batch; lower is better)")
        side = [result(p)["ms"] for p in [spawn("loop", path, args.reps, [c]) for c in cpus]]
        ceiling = max(side) / len(cpus)
        print(
            f"  ceiling: {len(cpus)} pipelines pinned one per core, side by side: "
            f"{', '.join(f'{v:.1f}' for v in side)} each, {ceiling:.1f} per job together "
            f"({one / ceiling:.2f}x one core alone)"
        )
        out = d / "out"
        out.mkdir()
        batch = {}
        for workers in (1, len(cpus)):
            res = worker_run([path], out, workers, args.reps)
            if res is None:
                return
            _, batch[workers], _ = res
            print(f"  gpu-image-worker -workers {workers}: {batch[workers]:.1f}")
        n = len(cpus)
        print(
            f"  -workers {n} / -workers 1: {batch[1] / batch[n]:.2f}x; "
            f"-workers {n} against the ceiling: {ceiling / batch[n]:.2f}x"
        )


if __name__ == "__main__":
    main()
