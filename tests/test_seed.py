"""The seed's system around the worker: its own producers (the Node.js
`redis` client, redis-cli) queueing jobs the worker takes, and three worker
processes sharing one queue."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import WORKER_CMD, make_photo, push, records, running_worker, seed_job
from redis_server import env_without_redis, wait_for

NODE_DIR = Path(__file__).parent / "node"


# -- the seed's own producers ---------------------------------------------------------


@pytest.fixture(scope="session")
def node_redis():
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the seed-compatibility test (apt-get install nodejs npm)")
    if not (NODE_DIR / "node_modules" / "redis").exists():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True, timeout=300
        )
    return NODE_DIR


def test_seed_nodejs_producer_line(r, redis_server, uploads, node_redis):
    job = seed_job(uploads, name="from-node")
    subprocess.run(["node", str(node_redis / "producer.js"), redis_server.url, json.dumps(job)], check=True, timeout=60)
    with running_worker(redis_server.url):
        wait_for(lambda: r.llen("image:done"))
    rec = records(r, "image:done")[0]
    assert rec["jobId"] == "from-node" and len(rec["outputs"]) == 3


def test_seed_redis_cli_manual_job(r, redis_server, uploads):
    src = make_photo(uploads / "user1" / "manual.jpg")
    payload = (
        f'{{"jobId":"test","inputPath":"{src}","outputDir":"{uploads / "user1" / "processed"}",'
        '"operations":["thumbnail"],"timestamp":1737158400000,"retryCount":0}'
    )
    subprocess.run(
        ["redis-cli", "-p", str(redis_server.port), "RPUSH", "image:jobs", payload], check=True, capture_output=True
    )
    with running_worker(redis_server.url):
        wait_for(lambda: r.llen("image:done"))
    assert (uploads / "user1" / "processed" / "test_thumbnail.webp").exists()


# -- scale -------------------------------------------------------------------------
def test_three_worker_processes_300_jobs(r, redis_server, uploads):
    base = make_photo(uploads / "user1" / "base.jpg", size=(96, 64))
    jobs = []
    for i in range(300):
        p = uploads / "user1" / f"s{i:03d}.jpg"
        shutil.copyfile(base, p)
        jobs.append(seed_job(uploads, name=f"s{i:03d}", ops=["thumbnail"]))
    procs = [
        subprocess.Popen(
            WORKER_CMD + ["-redis", f"127.0.0.1:{redis_server.port}", "-workers", "2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env_without_redis(),
        )
        for _ in range(3)
    ]
    try:
        push(r, *jobs)
        wait_for(lambda: r.llen("image:done") >= 300, timeout=240, what="300 done records")
        time.sleep(0.5)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert p.wait(60) == 0
    done = records(r, "image:done")
    assert sorted(d["jobId"] for d in done) == sorted(j["jobId"] for j in jobs)  # each exactly once
    assert len({d["worker"].rsplit("-", 1)[0] for d in done}) == 3  # all three processes took part
    assert r.llen("image:failed") == 0 and r.llen("image:jobs") == 0
