"""The operator commands (fastimg.cli.admin): submit, stats, requeue-failed,
purge-done and purge-failed, against the suite's redis-server."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import time
from pathlib import Path

from conftest import WORKER_CMD, make_photo, push, records, running_worker, seed_job
from redis_server import env_without_redis, wait_for


def cli(*args: str, url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        WORKER_CMD + [*args, "-redis", url], capture_output=True, text=True, timeout=120, env=env_without_redis()
    )


def test_submit_command(r, redis_server, tmp_path):
    photo = make_photo(tmp_path / "holiday.jpg")
    (tmp_path / "notes.txt").write_text("no")
    res = cli(
        "submit",
        str(photo),
        str(tmp_path / "notes.txt"),
        "--uploads-root",
        str(tmp_path / "up"),
        "--user",
        "u7",
        url=redis_server.url,
    )
    assert res.returncode == 1 and "notes.txt is not an image" in res.stderr
    job = json.loads(r.lindex("image:jobs", 0))
    assert r.llen("image:jobs") == 1 and job["jobId"].endswith("-holiday")
    assert Path(job["inputPath"]).parent == (tmp_path / "up" / "u7").resolve()
    assert len(list((tmp_path / "up" / "u7").iterdir())) == 1  # the text file was not stored


def test_stats_command(r, redis_server, uploads):
    push(r, seed_job(uploads, name="old", timestamp=int(time.time() * 1000) - 60_000), "x")
    r.rpush("image:failed", json.dumps({"jobId": "f"}))
    res = cli("stats", "--json", url=redis_server.url)
    s = json.loads(res.stdout)
    assert s["jobs"] == 2 and s["failed"] == 1 and s["done"] == 0 and s["inFlight"] == 0
    assert 59 <= s["oldestPendingAgeSeconds"] < 120 and s["liveWorkers"] == 0
    text = cli("stats", url=redis_server.url).stdout
    assert "image:jobs" in text and "live workers" in text


def test_requeue_failed_and_purge(r, redis_server, uploads):
    good = seed_job(uploads, name="comeback", ops=["thumbnail"])
    Path(good["inputPath"]).unlink()
    push(r, good, "garbage")
    with running_worker(redis_server.url, max_retries=0):
        wait_for(lambda: r.llen("image:failed") == 2)
    make_photo(Path(good["inputPath"]))
    res = cli("requeue-failed", "--reason", "input-missing", url=redis_server.url)
    assert "requeued 1 job(s)" in res.stdout
    requeued = json.loads(r.lindex("image:jobs", 0))
    assert requeued == {**good, "retryCount": 0}
    assert [rec["reason"] for rec in records(r, "image:failed")] == ["invalid-job"]
    with running_worker(redis_server.url):
        wait_for(lambda: r.llen("image:done") == 1)
    assert "deleted 1" in cli("purge-done", url=redis_server.url).stdout and r.llen("image:done") == 0
    assert "deleted 1" in cli("purge-failed", "--yes", url=redis_server.url).stdout and r.llen("image:failed") == 0


def dead_letters(client, n: int) -> list[dict]:
    """n dead letters on image:failed (newest first, as workers push them),
    their reasons alternating; returned oldest first."""
    made = [
        {
            "jobId": f"{i:06d}-a1b2c3d4-e5f6-7890-abcd-ef1234567890-vacation",
            "inputPath": f"/srv/uploads/u42/{i:06d}-vacation.jpg",
            "outputDir": "/srv/uploads/u42/processed",
            "operations": ["thumbnail", "blur", "low-quality"],
            "timestamp": 1737158400000,
            "retryCount": 3,
            "status": "failed",
            "error": "input file not found",
            "reason": "input-missing" if i % 2 == 0 else "corrupt-image",
            "attempts": 4,
            "worker": "host-4242-1a2b3c-0",
            "failedAt": 1795920258991 + i,
        }
        for i in range(n)
    ]
    pipe = client.pipeline(transaction=False)
    for rec in made:
        pipe.lpush("image:failed", json.dumps(rec))
    pipe.execute()
    return made


def as_job(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k in ("jobId", "inputPath", "outputDir", "operations", "timestamp")} | {
        "retryCount": 0
    }


def redis_cpu_seconds(client) -> float:
    info = client.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def test_requeue_failed_work_grows_linearly(r, redis_server):
    """The CPU time Redis spends on a requeue grows in proportion to the
    records (CPU time, not wall-clock: the machine may be busy; a quadratic
    pass makes the ratio 64, a linear one 8). The longest single command is
    measured by bench/admin_scale.py. Half the records are asked for: the jobs
    leave oldest first and the records left keep their order."""
    cpu = {}
    for n in (4_000, 32_000):
        r.flushall()
        made = dead_letters(r, n)
        before = redis_cpu_seconds(r)
        res = cli("requeue-failed", "--reason", "input-missing", url=redis_server.url)
        cpu[n] = redis_cpu_seconds(r) - before
        assert res.returncode == 0 and f"requeued {n // 2} job(s)" in res.stdout, res.stdout + res.stderr
        assert [json.loads(j) for j in r.lrange("image:jobs", 0, -1)] == [
            as_job(m) for m in made if m["reason"] == "input-missing"
        ]
        assert records(r, "image:failed") == [m for m in reversed(made) if m["reason"] == "corrupt-image"]
        assert not r.keys("image:failed:kept:*")
    assert cpu[32_000] < 20 * cpu[4_000], cpu


def more_jobs_than(client, n: int):
    return lambda: client.llen("image:jobs") > n


def test_requeue_failed_interrupted_or_killed_loses_nothing(r, redis_server):
    made = dead_letters(r, 20_000)
    wanted = [as_job(m) for m in made if m["reason"] == "input-missing"]
    kept = [m for m in reversed(made) if m["reason"] == "corrupt-image"]
    for sig in (signal.SIGINT, signal.SIGKILL):
        p = subprocess.Popen(
            WORKER_CMD + ["requeue-failed", "--reason", "input-missing", "-redis", redis_server.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_without_redis(),
            # A shell starts background commands with SIGINT ignored, and
            # Python keeps it so: give the run Ctrl-C as a terminal would.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        wait_for(more_jobs_than(r, r.llen("image:jobs")), interval=0.002, what="jobs moving")
        p.send_signal(sig)
        err = p.communicate(timeout=60)[1]
        side = r.keys("image:failed:kept:*")
        if sig == signal.SIGINT:
            assert p.returncode == 130 and "interrupted" in err and not side, err
        else:
            assert side, "the run finished before it was killed"
        jobs = [json.loads(j) for j in r.lrange("image:jobs", 0, -1)]
        held = [json.loads(x) for k in side for x in r.lrange(k, 0, -1)]
        assert jobs == wanted[: len(jobs)] and 0 < len(jobs) < len(wanted)
        moved = {j["jobId"] for j in jobs}
        assert sorted(m["jobId"] for m in records(r, "image:failed") + held) == sorted(
            m["jobId"] for m in made if m["jobId"] not in moved
        )
    res = cli("requeue-failed", "--reason", "input-missing", url=redis_server.url)
    assert res.returncode == 0, res.stderr
    assert [json.loads(j) for j in r.lrange("image:jobs", 0, -1)] == wanted
    assert records(r, "image:failed") == kept and not r.keys("image:failed:kept:*")


def test_purge_failed_asks_first(r, redis_server):
    r.rpush("image:failed", *[json.dumps({"jobId": f"j{i}"}) for i in range(5)])
    refused = cli("purge-failed", url=redis_server.url)  # no terminal to ask on
    assert refused.returncode == 2 and "--yes" in refused.stderr and r.llen("image:failed") == 5
    for answer, code, left in ((b"n\n", 1, 5), (b"\n", 1, 5), (b"y\n", 0, 0)):
        main, tty = pty.openpty()
        p = subprocess.Popen(
            WORKER_CMD + ["purge-failed", "-redis", redis_server.url],
            stdin=tty,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_without_redis(),
        )
        os.close(tty)
        os.write(main, answer)
        out = p.communicate(timeout=60)[0]
        os.close(main)
        assert p.returncode == code and r.llen("image:failed") == left, (answer, out)
        assert "Delete all 5 record(s) of image:failed? [y/N]" in out
    r.rpush("image:failed", *[json.dumps({"jobId": f"k{i}"}) for i in range(5)])
    kept = cli("purge-failed", "--keep", "2", url=redis_server.url)
    assert "deleted 3" in kept.stdout and [x["jobId"] for x in records(r, "image:failed")] == ["k0", "k1"]
    assert "deleted 2" in cli("purge-failed", "-y", url=redis_server.url).stdout and not r.exists("image:failed")
