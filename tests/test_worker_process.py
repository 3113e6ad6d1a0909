"""gpu-image-worker as a process: the CLI, signals, SIGKILL at random moments,
Redis going away, and Redis with a password and an ACL user."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import WORKER_CMD, push, records, seed_job
from output import Output
from PIL import Image
from redis_server import RedisServer, env_without_redis, free_port, wait_for

from fastimg.cli.worker import build_parser
from fastimg.queue.connect import redis_url


def start_worker(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        WORKER_CMD + list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env or env_without_redis(),
    )


def big_png(path, w=4000, h=3000):
    """A slow job: a 12 MP PNG stored without compression (fast to write, slow-ish to process)."""
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, "PNG", compress_level=0)
    return path


# -- the CLI -------------------------------------------------------------------
def test_help_explains_every_option():
    out = subprocess.run(WORKER_CMD + ["--help"], capture_output=True, text=True, check=True).stdout
    for opt in (
        "-redis",
        "-db",
        "-workers",
        "-max-retries",
        "--allowed-root",
        "--retry-base",
        "--retry-cap",
        "--heartbeat-ttl",
        "--shutdown-timeout",
        "--done-cap",
        "--failed-cap",
        "REDIS_URL",
        "REDIS_HOST",
        "REDIS_PORT",
        "REDIS_DB",
        "REDIS_PASSWORD",
    ):
        assert opt in out, opt


def test_seed_flags_single_and_double_dash():
    p = build_parser()
    a = p.parse_args(["-redis", "h:1", "-db", "2", "-workers", "3", "-max-retries", "5"])
    b = p.parse_args(["--redis", "h:1", "--db", "2", "--workers", "3", "--max-retries", "5"])
    assert vars(a) == vars(b)
    assert (a.redis, a.db, a.workers, a.max_retries) == ("h:1", 2, 3, 5)
    d = p.parse_args([])
    assert (d.redis, d.db, d.workers, d.max_retries) == (None, None, 4, 3)
    with pytest.raises(SystemExit):
        p.parse_args(["-workers", "0"])


def test_redis_settings_from_env_and_flags():
    assert redis_url(None, None, {}) == "redis://localhost:6379"
    env = {"REDIS_HOST": "cache", "REDIS_PORT": "7000", "REDIS_DB": "3", "REDIS_PASSWORD": "p@ss"}
    assert redis_url(None, None, env) == "redis://:p%40ss@cache:7000/3"
    assert redis_url("other:1", 4, env) == "redis://:p%40ss@other:1/4"  # flags win
    env_url = {"REDIS_URL": "rediss://alice:secret@redis.example:6380/2", "REDIS_HOST": "ignored"}
    assert redis_url(None, None, env_url) == "rediss://alice:secret@redis.example:6380/2"
    assert redis_url(None, 5, env_url) == "rediss://alice:secret@redis.example:6380/5"
    acl = {"REDIS_USERNAME": "worker", "REDIS_PASSWORD": "pw"}
    assert redis_url("h:1", None, acl) == "redis://worker:pw@h:1"


def test_start_up_lines_and_bad_settings(redis_server, r, uploads):
    push(r, seed_job(uploads, name="cli", ops=["thumbnail"]))
    env = env_without_redis() | {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_server.port)}
    p = start_worker("-workers", "2", "--shutdown-timeout", "5", env=env)
    try:
        wait_for(lambda: r.llen("image:done"), what="job done")
    finally:
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=30)[0]
    assert p.returncode == 0, out
    assert "[MAIN] Starting Image Worker with 2 CPU workers" in out
    assert f"[MAIN] Redis: 127.0.0.1:{redis_server.port}, DB: 0" in out
    assert "[MAIN] Kernels: " in out and "any absolute path" in out
    for line in (
        "[WORKER-0] Started",
        "[WORKER-1] Started",
        "with operations: [thumbnail]",
        "Input image read: ",
        "Operation thumbnail complete: ",
        "completed successfully in ",
    ):
        assert line in out, line
    bad = subprocess.run(WORKER_CMD + ["--allowed-root", "relative/dir"], capture_output=True, text=True)
    assert bad.returncode == 2 and "absolute" in bad.stderr


# -- signals -------------------------------------------------------------------
def test_sigterm_finishes_the_job_in_hand(redis_server, r, uploads):
    job = seed_job(uploads, name="slow")
    job["inputPath"] = str(big_png(uploads / "user1" / "slow.png"))
    push(r, job, seed_job(uploads, name="next", ops=["thumbnail"]))
    p = start_worker("-redis", f"127.0.0.1:{redis_server.port}", "-workers", "1")
    try:
        wait_for(lambda: r.keys("image:processing:*") and r.llen(r.keys("image:processing:*")[0]), interval=0.005)
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=60)[0]
    finally:
        p.kill()
    assert p.returncode == 0, out
    assert [d["jobId"] for d in records(r, "image:done")] == ["slow"]
    assert [json.loads(j)["jobId"] for j in r.lrange("image:jobs", 0, -1)] == ["next"]  # not taken
    assert not r.keys("image:processing:*") and r.scard("image:workers") == 0


def test_second_signal_puts_the_job_back_at_the_head(redis_server, r, uploads):
    job = seed_job(uploads, name="slow2")
    job["inputPath"] = str(big_png(uploads / "user1" / "slow2.png", 6000, 4000))
    push(r, job, seed_job(uploads, name="after", ops=["thumbnail"]))
    p = start_worker("-redis", f"127.0.0.1:{redis_server.port}", "-workers", "1", "--shutdown-timeout", "120")
    try:
        wait_for(lambda: r.keys("image:processing:*") and r.llen(r.keys("image:processing:*")[0]), interval=0.005)
        p.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        out = p.communicate(timeout=60)[0]
    finally:
        p.kill()
    assert p.returncode == 0, out
    queued = [json.loads(j) for j in r.lrange("image:jobs", 0, -1)]
    if r.llen("image:done") == 0:  # the usual case: the job was still in hand
        assert [j["jobId"] for j in queued] == ["slow2", "after"]
        assert queued[0] == job  # unchanged: a signal is not a failed attempt
    else:
        assert [j["jobId"] for j in queued] == ["after"]
    assert not r.keys("image:processing:*")


def test_ctrl_c_before_redis_was_ever_reached_leaves_at_once():
    """Nothing was taken, so there is nothing to give back: no retries, no
    'Redis error while stopping', exit 0."""
    p = start_worker("-redis", f"127.0.0.1:{free_port()}", "-workers", "2")
    out = Output(p)
    try:
        out.wait_for("Redis error at start-up", times=2)
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        text = out.close(timeout=20)
        took = time.monotonic() - t0
    finally:
        p.kill()
    assert p.returncode == 0 and "Redis error while stopping" not in text, text
    assert took < 5, (took, text)


def test_second_ctrl_c_leaves_at_once_when_redis_is_gone(uploads):
    """Redis dies with a job in hand: the first Ctrl-C waits to record it, the
    second stops at once (exit 1: the job stays in flight, for the lease to
    lapse and another worker to recover), with one line about Redis."""
    server = RedisServer()
    try:
        job = seed_job(uploads, name="stuck")
        job["inputPath"] = str(big_png(uploads / "user1" / "stuck.png", 6000, 4000))
        push(server.client(), job)
        p = start_worker("-redis", f"127.0.0.1:{server.port}", "-workers", "1", "--shutdown-timeout", "300")
        out = Output(p)
        try:
            out.wait_for("Processing job stuck")
            server.proc.kill()
            server.proc.wait()
            p.send_signal(signal.SIGINT)
            out.wait_for("Received SIGINT: finishing jobs in hand")
            t0 = time.monotonic()
            p.send_signal(signal.SIGINT)
            text = out.close(timeout=30)
            took = time.monotonic() - t0
        finally:
            p.kill()
    finally:
        server.close()
    assert p.returncode == 1 and "jobs left in flight" in text, text
    assert text.count("Redis error while stopping") == 1, text
    assert took < 5, (took, text)


# -- SIGKILL at random moments ---------------------------------------------------
def test_killed_workers_lose_no_job(redis_server, r, uploads):
    n = 40
    jobs = [seed_job(uploads, name=f"k{i:02d}") for i in range(n)]
    for i in range(0, n, 4):  # some bigger ones, so kills land mid-job
        from conftest import make_photo

        make_photo(uploads / "user1" / f"k{i:02d}.jpg", size=(2400, 1800), seed=i)
    push(r, *jobs)
    rng = random.Random()
    common = ["-redis", f"127.0.0.1:{redis_server.port}", "--heartbeat-ttl", "1", "-max-retries", "10"]
    for _ in range(5):
        p = start_worker(*common, "-workers", "2")
        time.sleep(rng.uniform(0.3, 1.5))
        p.send_signal(signal.SIGKILL)
        p.wait()
    p = start_worker(*common, "-workers", "2")
    try:
        wait_for(lambda: r.llen("image:done") + r.llen("image:failed") >= n, timeout=120, what="all outcomes")
        time.sleep(0.5)  # anything recorded twice would show up now
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
    done = records(r, "image:done")
    failed = records(r, "image:failed")
    ids = [d["jobId"] for d in done] + [f["jobId"] for f in failed]
    assert sorted(ids) == sorted(j["jobId"] for j in jobs), "every job exactly once"
    assert not failed, failed
    assert r.llen("image:jobs") == 0 and r.llen("image:retry") == 0 and not r.keys("image:processing:*")
    assert not list(uploads.rglob("*.tmp")), "temporary files of killed attempts were left"
    for d in done:
        for o in d["outputs"]:
            with Image.open(o["path"]) as im:
                im.load()  # a complete WebP
                assert im.size == (o["width"], o["height"])


# -- memory -----------------------------------------------------------------------
def minor_faults(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[7])  # minflt, field 10 of proc(5)


@pytest.mark.parametrize("operator_env", [{}, {"MALLOC_MMAP_THRESHOLD_": "131072"}])
def test_jobs_reuse_the_memory_of_earlier_jobs(redis_server, r, uploads, operator_env):
    # Jobs are alike: once warm, a worker should find the memory a job needs
    # in what the last one freed, not page-fault its way through fresh memory
    # (docs/performance.md). An operator's own malloc settings still win.
    from conftest import make_photo

    make_photo(uploads / "user1" / "mem.jpg", size=(2400, 1800))
    job = seed_job(uploads, name="mem")
    p = start_worker(
        "-redis", f"127.0.0.1:{redis_server.port}", "-workers", "1", env=dict(env_without_redis(), **operator_env)
    )
    try:
        for _ in range(3):
            push(r, job)
            assert r.blpop("image:done", 60)
        before = minor_faults(p.pid)
        for _ in range(5):
            push(r, job)
            assert r.blpop("image:done", 60)
        per_job = (minor_faults(p.pid) - before) / 5
    finally:
        p.terminate()
        p.communicate(timeout=60)
    if operator_env:
        assert per_job > 2000, per_job  # the operator's tiny threshold was kept
    else:
        assert per_job < 500, per_job


# -- Redis going away -------------------------------------------------------------
def test_worker_survives_redis_restart(uploads):
    server = RedisServer()
    try:
        client = server.client()
        push(client, seed_job(uploads, name="before", ops=["thumbnail"]))
        p = start_worker("-redis", f"127.0.0.1:{server.port}", "-workers", "2")
        wait_for(lambda: client.llen("image:done") == 1)
        server.stop()
        time.sleep(1.5)
        assert p.poll() is None, "worker exited when Redis went away"
        server.start()
        client = server.client()
        push(client, seed_job(uploads, name="after", ops=["thumbnail"]))
        wait_for(lambda: client.llen("image:done") == 1, timeout=60, what="job after restart")
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=60)[0]
        assert p.returncode == 0
        assert "Redis error" in out
        assert records(client, "image:done")[0]["jobId"] == "after"
    finally:
        server.close()


# -- authentication ------------------------------------------------------------
# What the worker needs, and nothing else: its own keys and these commands.
WORKER_ACL = (
    "on >workerpw ~image:* resetchannels &image:events -@all +blmove +lmove +lrange +lrem +lpush +rpush "
    "+ltrim +llen +zadd +zrangebyscore +zrem +set +exists +del +sadd +srem +smembers "
    "+evalsha +eval +script|load +multi +exec +select +ping +hset +expire +publish +lindex +scan +lpos +get "
    "+client|setname +client|list +client|unblock"
)


def test_worker_runs_with_password_and_acl_user(uploads):
    server = RedisServer(["--requirepass", "adminpw"])
    try:
        admin = server.client(password="adminpw")
        admin.execute_command("ACL", "SETUSER", "imageworker", *WORKER_ACL.split())
        push(admin, seed_job(uploads, name="acl", ops=["thumbnail", "blur"]))
        env = env_without_redis() | {
            "REDIS_URL": f"redis://127.0.0.1:{server.port}/0",
            "REDIS_USERNAME": "imageworker",
            "REDIS_PASSWORD": "workerpw",
        }
        p = start_worker("-workers", "1", env=env)
        wait_for(lambda: admin.llen("image:done") + admin.llen("image:failed"), timeout=30)
        # The slot's connection carries the slot's id (docs/worker.md, Signals).
        slots = {wid.decode() for wid in admin.smembers("image:workers")}
        assert slots and slots <= {c["name"] for c in admin.client_list()}, admin.client_list()
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=30)[0]
        assert p.returncode == 0, out
        assert records(admin, "image:done")[0]["jobId"] == "acl", out
        assert "permission" not in out.lower() and "not written" not in out and "Redis error" not in out, out
        # The password alone (default user) works too.
        push(admin, seed_job(uploads, name="pw", ops=["thumbnail"]))
        env = env_without_redis() | {
            "REDIS_PORT": str(server.port),
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PASSWORD": "adminpw",
        }
        p = start_worker("-workers", "1", env=env)
        wait_for(lambda: admin.llen("image:done") == 2, timeout=30)
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
    finally:
        server.close()
