"""The operator commands (fastimg.cli.admin): submit, stats, requeue-failed,
purge-done and purge-failed, against the suite's redis-server."""

from __future__ import annotations

import json
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
    assert "deleted 1" in cli("purge-failed", url=redis_server.url).stdout and r.llen("image:failed") == 0
