"""What flushing outputs to disk costs a job: the worker's pipeline on the same
photo with a durable writer (fsync of each output and of the directory, the
default) and without (--no-fsync), interleaved, medians.

    python bench/fsync.py [--reps 30] [--dir DIR]

--dir chooses the filesystem the outputs go to (default: a temporary
directory, often tmpfs-backed in containers, where fsync costs nothing: point
it at the disk the uploads live on)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests")]

from conftest import DATA  # noqa: E402

from fastimg.image.pipeline import encoder_pool, process  # noqa: E402
from fastimg.image.write import Writer  # noqa: E402
from fastimg.queue.jobs import parse_job  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    out = tempfile.mkdtemp(dir=args.dir)
    photo = DATA / "rocket.jpg"
    job = parse_job(
        json.dumps(
            {
                "jobId": "bench",
                "inputPath": str(photo),
                "outputDir": out,
                "operations": ["thumbnail", "blur", "low-quality"],
            }
        )
    )
    pool = encoder_pool()
    writers = {"fsync": Writer(durable=True), "no fsync": Writer(durable=False)}
    times: dict = {k: [] for k in writers}
    for w in writers.values():
        process(job, encoders=pool, writer=w)  # warm up
    for _ in range(args.reps):
        for name, w in writers.items():
            t0 = time.perf_counter()
            process(job, encoders=pool, writer=w)
            times[name].append((time.perf_counter() - t0) * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{photo.name} -> {out} ({args.reps} interleaved runs, median ms per job)")
    for k, v in med.items():
        print(f"  {k:<9} {v:8.2f}")
    print(f"  fsync costs {med['fsync'] - med['no fsync']:+.2f} ms a job ({med['fsync'] / med['no fsync']:.3f}x)")


if __name__ == "__main__":
    main()
