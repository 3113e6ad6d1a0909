"""The operator tools on a large image:failed: how long `requeue-failed` and
`purge-failed --keep` take, and how long each Redis command they send runs
(SLOWLOG records each command that ran over 1 ms, INFO commandstats counts
them all; the longest is what every other client of that Redis waits behind).

    python bench/admin_scale.py [--records 50000 100000] [--timeout 120]

Half the records have reason input-missing, half corrupt-image, alternating,
so `requeue-failed --reason input-missing` moves half and keeps half in place.
A run that passes --timeout is stopped and reported with the records it moved."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests")]

from redis_server import RedisServer, env_without_redis  # noqa: E402

WORKER_CMD = [sys.executable, "-m", "fastimg.cli.main"]


def record(i: int) -> bytes:
    reason = "input-missing" if i % 2 == 0 else "corrupt-image"
    return json.dumps(
        {
            "jobId": f"{i:08d}-a1b2c3d4-e5f6-7890-abcd-ef1234567890-vacation",
            "inputPath": f"/srv/app/uploads/u42/{i:08d}-a1b2c3d4-e5f6-7890-abcd-ef1234567890-vacation.jpg",
            "outputDir": "/srv/app/uploads/u42/processed",
            "operations": ["thumbnail", "blur", "low-quality"],
            "timestamp": 1737158400000,
            "retryCount": 3,
            "status": "failed",
            "error": "input file not found: /srv/app/uploads/u42/vacation.jpg",
            "reason": reason,
            "attempts": 4,
            "worker": "host-4242-1a2b3c-0",
            "failedAt": 1795920258991,
        }
    ).encode()


def fill(conn, n: int) -> None:
    conn.delete("image:failed", "image:jobs")
    pipe = conn.pipeline(transaction=False)
    for i in range(n):
        pipe.lpush("image:failed", record(i))  # newest first: record 0 is the oldest
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def run(server: RedisServer, args: list[str], timeout: float) -> dict:
    conn = server.client()
    conn.config_set("slowlog-log-slower-than", 1000)
    conn.config_set("slowlog-max-len", 1_000_000)
    conn.slowlog_reset()
    conn.config_resetstat()
    t0 = time.perf_counter()
    try:
        res = subprocess.run(
            WORKER_CMD + args + ["-redis", f"127.0.0.1:{server.port}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env_without_redis(),
            input="",
        )
        out, finished = res.stdout.strip() + res.stderr.strip(), True
    except subprocess.TimeoutExpired:
        out, finished = "(stopped at the timeout)", False
    took = time.perf_counter() - t0
    entries = conn.slowlog_get(1_000_000)
    stats = conn.info("commandstats")
    calls = sum(v["calls"] for k, v in stats.items() if k != "cmdstat_slowlog")
    per_script = stats.get("cmdstat_evalsha", {}).get("usec_per_call", 0) / 1000
    conn.config_set("slowlog-log-slower-than", 10_000)
    durations = sorted(e["duration"] for e in entries if not e["command"].upper().startswith(b"CONFIG"))
    return {
        "seconds": round(took, 2),
        "finished": finished,
        "commands": calls,
        "mean_script_ms": round(per_script, 3),
        "max_ms": round(durations[-1] / 1000, 2) if durations else "<1",
        "over_1ms": len(durations),
        "over_10ms": sum(1 for d in durations if d > 10_000),
        "moved": conn.llen("image:jobs"),
        "left": conn.llen("image:failed"),
        "output": out,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, nargs="+", default=[50_000, 100_000])
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    server = RedisServer()
    try:
        conn = server.client()
        for n in args.records:
            for name, cmd in (
                ("requeue-failed (all)", ["requeue-failed"]),
                ("requeue-failed --reason input-missing", ["requeue-failed", "--reason", "input-missing"]),
                ("purge-failed --keep 1000", ["purge-failed", "--keep", "1000"]),
            ):
                fill(conn, n)
                r = run(server, cmd, args.timeout)
                print(f"{n} records, {name}: {json.dumps(r)}", flush=True)
    finally:
        server.close()


if __name__ == "__main__":
    main()
