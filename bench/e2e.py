"""End-to-end speed of a thumbnail worker, side by side in one run:
``python bench/e2e.py [--reps N]``.

Every competitor makes output spec v1 (docs/outputs.md) from the same files,
one image at a time on one core:

  fastimg     the worker's pipeline in-process (decode, kernels, encode, write)
  worker-1/2  gpu-image-worker -workers 1 / 2 through a real Redis, RPUSH to image:done
  pillow      plain Pillow, written the usual way (exif_transpose, thumbnail, GaussianBlur, save)
  pyvips      pyvips thumbnail (shrink-on-load), gaussblur, webpsave  (pip install "pyvips[binary]")
  sharp       sharp under Node.js, sharp.concurrency(1)               (cd bench/node && npm install)
  floor       the codec floor: decoding at the same shrink, plus the three WebP encodes of
              already-resized images: what no pipeline can go below with these codecs

It prints median ms per image, each competitor's time relative to fastimg, output
bytes per operation, thumbnail PSNR against a float64 reference made from the
original, and the worker's peak memory. Competitors not installed are skipped
with a line saying so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]
import reference  # noqa: E402
from conftest import DATA, make_12mp  # noqa: E402

from fastimg.image.decode import decode  # noqa: E402
from fastimg.image.limits import Limits  # noqa: E402
from fastimg.image.pipeline import encoder_pool, process  # noqa: E402
from fastimg.image.render import render  # noqa: E402
from fastimg.image.spec import SPEC_V1, fit_inside  # noqa: E402
from fastimg.image.write import encode_webp  # noqa: E402
from fastimg.queue.jobs import parse_job  # noqa: E402

OPS = ("thumbnail", "blur", "low-quality")
ENCODERS = encoder_pool()


def make_inputs(d: Path) -> dict:
    """Fixed-seed inputs: name -> list of files."""
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, as phones do
    p12 = d / "photo-12mp.jpg"
    Image.fromarray(make_12mp(12)).transpose(Image.Transpose.ROTATE_90).save(p12, quality=90, exif=exif.tobytes())
    p24 = d / "photo-24mp.jpg"
    Image.fromarray(make_12mp(24)).resize((6000, 4000), Image.BICUBIC).save(p24, quality=90)
    png = d / "alpha-2mp.png"
    rgb = np.asarray(Image.open(DATA / "coffee.png").convert("RGB").resize((1732, 1155), Image.BICUBIC))
    yy, xx = np.mgrid[:1155, :1732]
    alpha = (np.clip(1.2 - np.hypot((yy - 577) / 577, (xx - 866) / 866), 0, 1) * 255).astype(np.uint8)
    Image.fromarray(np.dstack([rgb, alpha])).save(png)
    small = []
    for i, name in enumerate(sorted(p for p in DATA.iterdir() if p.suffix in (".png", ".jpg"))):
        p = d / f"small-{i}.jpg"
        Image.open(name).convert("RGB").resize((640, 480), Image.BICUBIC).save(p, quality=88)
        small.append(p)
    return {"12 MP JPEG": [p12], "24 MP JPEG": [p24], "2 MP PNG alpha": [png], "0.3 MP JPEG x7": small}


def box(op):
    return SPEC_V1[op].width


def sigma_for(size):
    return SPEC_V1["blur"].sigma_fraction * max(size)


# -- competitors: each makes all outputs of one file into out/ -------------------------
def run_fastimg(path: Path, out: Path) -> None:
    job = parse_job(
        json.dumps({"jobId": path.stem, "inputPath": str(path), "outputDir": str(out), "operations": list(OPS)})
    )
    process(job, Limits(), encoders=ENCODERS)


def run_pillow(path: Path, out: Path) -> None:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
    for op in OPS:
        t = im.copy()
        t.thumbnail((box(op), box(op)), Image.LANCZOS)
        if op == "blur":
            t = t.filter(ImageFilter.GaussianBlur(sigma_for(t.size)))
        if op == "low-quality":
            step = 255 / 31
            lut = [round(round(v / step) * step) for v in range(256)]
            t = t.point(lut * len(t.getbands()))
        t.save(out / f"{path.stem}_{op}.webp", "WEBP", quality=SPEC_V1[op].quality, method=4)


def run_pyvips(path: Path, out: Path) -> None:
    import pyvips

    for op in OPS:
        im = pyvips.Image.thumbnail(str(path), box(op), height=box(op), size="down")
        if op == "blur":
            im = im.gaussblur(sigma_for((im.width, im.height)))
        if op == "low-quality":
            step = 255 / 31
            im = ((im / step).rint() * step).cast("uchar")
        im.webpsave(str(out / f"{path.stem}_{op}.webp"), Q=SPEC_V1[op].quality, effort=4, keep="none")


class Floor:
    """Decode at the pipeline's shrink, then encode the finished outputs (made beforehand)."""

    def __init__(self, path: Path) -> None:
        pixels = decode(path.read_bytes(), [SPEC_V1[op] for op in OPS], Limits())
        self.images = render(pixels, OPS, SPEC_V1)

    def run(self, path: Path, out: Path) -> None:
        decode(path.read_bytes(), [SPEC_V1[op] for op in OPS], Limits())
        for op in OPS:
            (out / f"{path.stem}_{op}.webp").write_bytes(encode_webp(self.images[op], SPEC_V1[op]))


def median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def sharp_times(files, out: Path, reps: int):
    node_dir = HERE / "node"
    if shutil.which("node") is None or not (node_dir / "node_modules" / "sharp").exists():
        return None
    arg = json.dumps({"files": [str(f) for f in files], "outDir": str(out), "reps": reps})
    res = subprocess.run(["node", str(node_dir / "sharp_bench.js"), arg], capture_output=True, text=True, cwd=node_dir)
    if res.returncode != 0:
        print(f"sharp failed: {res.stderr.strip()[:300]}")
        return None
    return {Path(k): statistics.median(v) for k, v in json.loads(res.stdout).items()}


def worker_run(files, out: Path, workers: int, reps: int):
    """Per-image latency (one job at a time) and batch throughput through Redis."""
    import redis as redislib
    from redis_server import RedisServer

    try:
        server = RedisServer()
    except RuntimeError as e:
        print(f"worker: skipped ({e})")
        return None
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastimg.cli.main", "-redis", f"127.0.0.1:{server.port}", "-workers", str(workers)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.sched_setaffinity(0, range(os.cpu_count() or 1)),
    )
    conn = redislib.Redis(port=server.port)
    try:

        def job(f):
            return json.dumps(
                {
                    "jobId": f.stem,
                    "inputPath": str(f),
                    "outputDir": str(out),
                    "operations": list(OPS),
                    "timestamp": int(time.time() * 1000),
                    "retryCount": 0,
                }
            )

        conn.rpush("image:jobs", job(files[0]))
        conn.blpop("image:done", 60)  # warm-up: imports, first allocation
        lat = {}
        for f in files:
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                conn.rpush("image:jobs", job(f))
                conn.blpop("image:done", 60)
                times.append((time.perf_counter() - t0) * 1000)
            lat[f] = statistics.median(times)
        batch = [f for f in files for _ in range(reps)]
        t0 = time.perf_counter()
        conn.rpush("image:jobs", *[job(f) for f in batch])
        for _ in batch:
            conn.blpop("image:done", 120)
        per_image = (time.perf_counter() - t0) * 1000 / len(batch)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        hwm = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024
        return lat, per_image, hwm
    finally:
        proc.terminate()
        proc.wait(30)
        server.close()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument(
        "--cores",
        type=int,
        default=1,
        help="CPUs the in-process competitors and sharp may use (default 1: per-core comparison)",
    )
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))[: args.cores]
    os.sched_setaffinity(0, cpus)  # children (node) inherit it; the Redis workers get all CPUs back below
    print(f"in-process competitors and sharp on CPU(s) {cpus}; workers through Redis on all CPUs")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import pyvips

        pyvips.concurrency_set(1)
        pyvips.cache_set_max(0)
        have_vips = True
    except (ImportError, OSError) as e:
        print(f"pyvips: skipped ({e}); pip install 'pyvips[binary]'")
        have_vips = False
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        groups = make_inputs(d)
        files = [f for fs in groups.values() for f in fs]
        outs = {}

        def outdir(name):
            outs[name] = d / f"out-{name}"
            outs[name].mkdir(exist_ok=True)
            return outs[name]

        times = {}
        competitors = [("fastimg", run_fastimg), ("pillow", run_pillow)] + (
            [("pyvips", run_pyvips)] if have_vips else []
        )
        for name, fn in competitors:
            o = outdir(name)
            fn(files[0], o)  # warm-up
            times[name] = {f: median_ms(lambda f=f, fn=fn, o=o: fn(f, o), args.reps) for f in files}
        o = outdir("floor")
        times["floor"] = {}
        for f in files:
            floor = Floor(f)
            times["floor"][f] = median_ms(lambda f=f, floor=floor: floor.run(f, o), args.reps)
        s = sharp_times(files, outdir("sharp"), args.reps)
        if s is None:
            print("sharp: skipped (cd bench/node && npm install)")
        else:
            times["sharp"] = s
        memory, batch = {}, {}
        for workers in (1, 2):
            res = worker_run(files, outdir(f"worker-{workers}"), workers, args.reps)
            if res:
                lat, batch[workers], memory[workers] = res
                times[f"worker-{workers}"] = lat

        print(f"\nmedian ms per image ({args.reps} runs; 'x' = time relative to fastimg in-process)")
        names = list(times)
        print(f"{'input':<18}" + "".join(f"{n:>20}" for n in names))
        for group, fs in groups.items():
            row = f"{group:<18}"
            base = sum(times["fastimg"][f] for f in fs) / len(fs)
            for n in names:
                v = sum(times[n][f] for f in fs) / len(fs)
                row += f"{v:>11.1f} ({v / base:4.2f}x)"
            print(row)

        print("\noutput bytes per operation (all inputs) and thumbnail PSNR against the float64 reference (12 MP)")
        f12 = groups["12 MP JPEG"][0]
        with Image.open(f12) as im:
            upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        h, w = upright.shape[:2]
        ref = reference.resize(upright, fit_inside(w, h, 320, 320))
        for n, o in outs.items():
            if not any(o.iterdir()):
                continue
            sizes = {
                op: sum(
                    (o / f"{f.stem}_{op}.webp").stat().st_size for f in files if (o / f"{f.stem}_{op}.webp").exists()
                )
                for op in OPS
            }
            got = np.asarray(Image.open(o / f"{f12.stem}_thumbnail.webp").convert("RGB"))
            q = psnr(got, ref) if got.shape == ref.shape else float("nan")
            print(f"{n:<12} " + "  ".join(f"{op} {sizes[op]:>9,}" for op in OPS) + f"   thumbnail PSNR {q:.2f} dB")
        for workers, hwm in memory.items():
            print(
                f"worker -workers {workers}: {batch[workers]:.1f} ms per image over a batch of all inputs "
                f"({1000 / batch[workers]:.1f} images/s); peak RSS {hwm:.0f} MB over the whole run"
            )
        if len(batch) == 2:
            print(f"-workers 2 throughput / -workers 1: {batch[1] / batch[2]:.2f}x")


if __name__ == "__main__":
    main()
