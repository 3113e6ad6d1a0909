"""The worker's memory over a long run: ``python bench/memory.py [--jobs N]``.

Runs gpu-image-worker through a real Redis on a repeating mix of the e2e
inputs (12 and 24 MP JPEGs, a 2 MP PNG with alpha, small JPEGs) and prints the
worker's resident memory after 10, 100 and every further few hundred jobs,
once with glibc as the worker tunes it (allocator.tune_malloc) and once with
jemalloc when its library is installed. Growth between 100 and N jobs is what
fragmentation looks like.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]
from e2e import OPS, make_inputs  # noqa: E402

JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith(field)).split()[1]) / 1024


def run(files, out: Path, jobs: int, workers: int, env_extra: dict, marks) -> dict:
    import redis as redislib
    from redis_server import RedisServer

    server = RedisServer()
    env = dict(os.environ, **env_extra)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastimg.cli.main", "-redis", f"127.0.0.1:{server.port}", "-workers", str(workers)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    conn = redislib.Redis(port=server.port)
    seen = {}
    try:
        for i in range(jobs):
            f = files[i % len(files)]
            conn.rpush(
                "image:jobs",
                json.dumps(
                    {
                        "jobId": f"{f.stem}-{i}",
                        "inputPath": str(f),
                        "outputDir": str(out),
                        "operations": list(OPS),
                        "timestamp": int(time.time() * 1000),
                        "retryCount": 0,
                    }
                ),
            )
            # Keep the queue a little ahead of the workers, never far: the
            # numbers should be the worker's, not a backlog's.
            while conn.llen("image:jobs") > 2 * workers:
                time.sleep(0.005)
            done = conn.llen("image:done")
            for m in marks:
                if m not in seen and done >= m:
                    seen[m] = rss_mb(proc.pid)
        while conn.llen("image:done") < min(jobs, 1000) and conn.llen("image:jobs") + conn.llen("image:failed") > 0:
            time.sleep(0.05)
        time.sleep(0.5)
        seen[jobs] = rss_mb(proc.pid)
        seen["peak"] = rss_mb(proc.pid, "VmHWM")
        failed = conn.llen("image:failed")
        if failed:
            print(f"  ({failed} jobs failed)")
        return seen
    finally:
        proc.terminate()
        proc.wait(30)
        server.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    settings = [("glibc, as the worker tunes it", {})]
    if JEMALLOC.exists():
        settings.append(("jemalloc (LD_PRELOAD)", {"LD_PRELOAD": str(JEMALLOC)}))
    else:
        print(f"jemalloc: skipped ({JEMALLOC} not found; apt-get install libjemalloc2)")
    marks = [10, 100] + list(range(250, args.jobs, 250))
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        groups = make_inputs(d)
        files = [f for fs in groups.values() for f in fs]
        out = d / "out"
        out.mkdir()
        print(
            f"worker -workers {args.workers}, {args.jobs} jobs cycling over {len(files)} inputs; RSS in MB after N jobs"
        )
        for name, env in settings:
            seen = run(files, out, args.jobs, args.workers, env, marks)
            peak = seen.pop("peak")
            row = "  ".join(f"{n}: {mb:.0f}" for n, mb in sorted(seen.items()))
            grow = seen[args.jobs] - seen[100]
            print(f"{name:<31} {row}  peak {peak:.0f}  ({grow:+.0f} MB from 100 to {args.jobs})")


if __name__ == "__main__":
    main()
