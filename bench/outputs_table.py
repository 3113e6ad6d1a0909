"""Output sizes, quality and time of the worker's pipeline over the test
photos and generated 12 MP inputs, and the data behind the low-quality
default: ``python bench/outputs_table.py`` (prints the tables of docs/outputs.md).

PSNR compares each decoded WebP with a float64 reference made from the
original pixels (tests/reference.py): resize, then blur or quantise."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]
import reference  # noqa: E402
from conftest import DATA, make_12mp  # noqa: E402

from fastimg.image.decode import decode  # noqa: E402
from fastimg.image.limits import Limits  # noqa: E402
from fastimg.image.pipeline import encoder_pool, process  # noqa: E402
from fastimg.image.spec import SPEC_V1, apply_overrides, fit_inside  # noqa: E402
from fastimg.queue.jobs import parse_job  # noqa: E402

OPS = ("thumbnail", "blur", "low-quality")
ENCODERS = encoder_pool()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def expected(original: np.ndarray, spec) -> np.ndarray:
    h, w = original.shape[:2]
    size = fit_inside(w, h, spec.width, spec.height)
    img = original if original.ndim == 3 else original[..., None]
    out = reference.resize(img, size) if size != (w, h) else img
    sigma = spec.sigma or spec.sigma_fraction * max(size)
    if sigma:
        out = reference.gaussian_blur(out, sigma)
    if spec.levels:
        out = reference.quantize(out, spec.levels, spec.dither)
    return out if original.ndim == 3 else out[..., 0]


def measure(path: Path, spec, workdir: Path, against=None):
    job = parse_job(
        json.dumps({"jobId": path.stem, "inputPath": str(path), "outputDir": str(workdir), "operations": list(OPS)}),
        (),
        spec,
    )
    t0 = time.perf_counter()
    result = process(job, Limits(), encoders=ENCODERS)
    ms = (time.perf_counter() - t0) * 1000
    original = decode(
        path.read_bytes(),
        [apply_overrides(SPEC_V1, {"thumbnail": {"width": 16384, "height": 16384}})["thumbnail"]],
        Limits(),
    )
    rows = {}
    for o in result.outputs:
        got = np.asarray(Image.open(o.path).convert("RGB" if original.ndim == 3 else "L"))
        ref_spec = (against or spec)[o.operation]
        rows[o.operation] = (o.bytes, psnr(got, expected(original, ref_spec)))
    return rows, ms, result.timings_ms


def inputs(tmp: Path):
    files = [DATA / p for p in sorted(DATA.iterdir()) if p.suffix in (".png", ".jpg")]
    for seed in (12, 13):
        p = tmp / f"generated-12mp-{seed}.jpg"
        Image.fromarray(make_12mp(seed)).save(p, "JPEG", quality=90)
        files.append(p)
    return files


def peak_rss_mb(path: Path, tmp: Path) -> float:
    # VmHWM, not ru_maxrss: the latter carries the parent's peak across fork and exec.
    code = (
        "import sys; from fastimg.cli.process import main; main([sys.argv[1], '-o', sys.argv[2], '-j', '1']);"
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), str(tmp / "mem")], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print("| input | thumbnail bytes / PSNR | blur bytes / PSNR | low-quality bytes / PSNR | job ms |")
        print("|---|---|---|---|---|")
        for path in inputs(tmp):
            rows, ms, _ = measure(path, SPEC_V1, tmp)
            cells = " | ".join(f"{rows[op][0]:,} / {rows[op][1]:.1f} dB" for op in OPS)
            print(f"| {path.name} | {cells} | {ms:.0f} |")

        print("\nlow-quality: levels per channel (no dither) and dither, over all inputs")
        print("| setting | total bytes | mean PSNR against the unquantised resize |")
        print("|---|---|---|")
        for levels, dither in ((8, False), (16, False), (32, False), (32, True), (64, False), (256, False)):
            spec = apply_overrides(SPEC_V1, {"low-quality": {"levels": levels, "dither": dither}})
            unquantised = apply_overrides(SPEC_V1, {"low-quality": {"levels": 256}})
            total, scores = 0, []
            for path in inputs(tmp):
                rows, _, _ = measure(path, spec, tmp, against=unquantised)
                total += rows["low-quality"][0]
                scores.append(rows["low-quality"][1])
            print(f"| {levels} levels{' + dither' if dither else ''} | {total:,} | {np.mean(scores):.1f} dB |")

        print("\npeak memory of `gpu-image-worker process` on one image (RSS, whole process)")
        for mp, size in ((12, (4032, 3024)), (50, (8160, 6120))):
            p = tmp / f"mem{mp}.jpg"
            Image.fromarray(make_12mp()).resize(size, Image.BILINEAR).save(p, "JPEG", quality=90)
            p_png = tmp / f"mem{mp}.png"
            Image.open(p).save(p_png, "PNG", compress_level=1)
            small = tmp / "tiny.jpg"
            Image.new("RGB", (16, 16)).save(small)
            base = peak_rss_mb(small, tmp)
            print(
                f"{mp} MP: JPEG {peak_rss_mb(p, tmp):.0f} MB, PNG {peak_rss_mb(p_png, tmp):.0f} MB "
                f"(baseline for a 16x16 image: {base:.0f} MB; decoded RGB {size[0] * size[1] * 3 / 2**20:.0f} MB)"
            )


if __name__ == "__main__":
    main()
