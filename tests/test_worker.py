"""The worker against a real redis-server: outputs, FIFO, outcomes, retries,
invalid jobs, limits on paths, caps, recovery of dead workers."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from conftest import make_photo, push, records, running_worker, seed_job
from PIL import Image
from redis_server import wait_for

from fastimg.image.limits import Limits
from fastimg.queue.connect import connector
from fastimg.queue.lists import Queue
from fastimg.queue.outcomes import RECORD_FIELDS


def lists(r) -> dict:
    return {k: r.llen(f"image:{k}") for k in ("jobs", "retry", "done", "failed")}


def test_seed_job_makes_three_webp_outputs(r, redis_server, uploads):
    job = seed_job(uploads, extra_field={"kept": True})
    make_photo(uploads / "user1" / "a1b2c3d4-photo.jpg", size=(1600, 1200))
    push(r, job)
    with running_worker(redis_server.url):
        wait_for(lambda: r.llen("image:done"), what="done record")
    rec = records(r, "image:done")[0]
    assert {k: rec[k] for k in job} == job  # the job's own fields, unknown ones included
    assert rec["status"] == "done" and rec["attempts"] == 1 and rec["worker"]
    assert rec["completedAt"] > 0 and rec["timings"]["total"] > 0
    expected = {"thumbnail": (320, 240), "blur": (640, 480), "low-quality": (1280, 960)}
    assert [o["operation"] for o in rec["outputs"]] == list(expected)
    for out in rec["outputs"]:
        path = os.path.join(job["outputDir"], f"{job['jobId']}_{out['operation']}.webp")
        assert out["path"] == path and os.path.getsize(path) == out["bytes"]
        with Image.open(path) as im:
            assert im.format == "WEBP" and im.size == expected[out["operation"]]
            assert (out["width"], out["height"]) == im.size
            assert not im.info.get("exif") and not im.info.get("icc_profile")
    assert lists(r) == {"jobs": 0, "retry": 0, "done": 1, "failed": 0}


def test_only_requested_operations_are_made(r, redis_server, uploads):
    job = seed_job(uploads, ops=["blur"])
    push(r, job)
    with running_worker(redis_server.url):
        wait_for(lambda: r.llen("image:done"))
    assert sorted(os.listdir(job["outputDir"])) == [f"{job['jobId']}_blur.webp"]


def test_small_images_are_never_upscaled(r, redis_server, uploads):
    job = seed_job(uploads, name="small")
    make_photo(uploads / "user1" / "small.jpg", size=(300, 200))
    push(r, job)
    with running_worker(redis_server.url):
        wait_for(lambda: r.llen("image:done"))
    sizes = {o["operation"]: (o["width"], o["height"]) for o in records(r, "image:done")[0]["outputs"]}
    assert sizes == {"thumbnail": (300, 200), "blur": (300, 200), "low-quality": (300, 200)}


def test_jobs_are_taken_oldest_first(r, redis_server, uploads):
    jobs = [seed_job(uploads, name=f"job{i}", ops=["thumbnail"]) for i in range(6)]
    push(r, *jobs)
    with running_worker(redis_server.url, workers=1):
        wait_for(lambda: r.llen("image:done") == 6)
    done = sorted(records(r, "image:done"), key=lambda rec: rec["completedAt"])
    assert [d["jobId"] for d in done] == [j["jobId"] for j in jobs]


INVALID = [
    ("not json", "invalid-job"),
    ("[1, 2]", "invalid-job"),
    (json.dumps({"inputPath": "/x.jpg", "outputDir": "/o", "operations": ["blur"]}), "invalid-job"),
    (
        json.dumps({"jobId": "../../etc/x", "inputPath": "/x.jpg", "outputDir": "/o", "operations": ["blur"]}),
        "unsafe-job-id",
    ),
    (json.dumps({"jobId": "..", "inputPath": "/x.jpg", "outputDir": "/o", "operations": ["blur"]}), "unsafe-job-id"),
    (json.dumps({"jobId": "a", "inputPath": "x.jpg", "outputDir": "/o", "operations": ["blur"]}), "invalid-job"),
    (json.dumps({"jobId": "a", "inputPath": "/x.jpg", "outputDir": "o", "operations": ["blur"]}), "invalid-job"),
    (json.dumps({"jobId": "a", "inputPath": "/x.jpg", "outputDir": "/o", "operations": ["sharpen"]}), "invalid-job"),
    (json.dumps({"jobId": "a", "inputPath": "/x.jpg", "outputDir": "/o", "operations": []}), "invalid-job"),
    (json.dumps({"jobId": "a", "inputPath": "/x.jpg", "outputDir": "/o", "operations": "blur"}), "invalid-job"),
    (json.dumps({"jobId": 7, "inputPath": "/x.jpg", "outputDir": "/o", "operations": ["blur"]}), "invalid-job"),
    (
        json.dumps({"jobId": "a", "inputPath": "/x.jpg", "outputDir": "/o", "operations": ["blur"], "retryCount": -1}),
        "invalid-job",
    ),
    (
        json.dumps(
            {"jobId": "a", "inputPath": "/x.jpg", "outputDir": "/o", "operations": ["blur"], "timestamp": "now"}
        ),
        "invalid-job",
    ),
]


def test_invalid_jobs_fail_at_once_with_payload_kept(r, redis_server):
    push(r, *[payload for payload, _ in INVALID])
    with running_worker(redis_server.url, workers=2):
        wait_for(lambda: r.llen("image:failed") == len(INVALID))
    assert lists(r) == {"jobs": 0, "retry": 0, "done": 0, "failed": len(INVALID)}
    failed = records(r, "image:failed")
    for rec in failed:
        assert rec["attempts"] == 1 and rec["error"] and rec["failedAt"] > 0
    for payload, reason in INVALID:
        parsed = json.loads(payload) if payload.startswith(("{", "[")) else None
        if isinstance(parsed, dict):
            # An object keeps its own fields, once: no copy of the payload beside them.
            [rec] = [rec for rec in failed if {k: v for k, v in rec.items() if k not in RECORD_FIELDS} == parsed]
            assert "raw" not in rec
        else:
            [rec] = [rec for rec in failed if rec.get("raw") == payload]
            assert rec["rawBytes"] == len(payload.encode())
        assert rec["reason"] == reason, payload


def test_transient_error_retries_then_succeeds(r, redis_server, uploads):
    job = seed_job(uploads, name="late", ops=["thumbnail"])
    os.unlink(job["inputPath"])  # the upload is not there yet
    push(r, job)
    with running_worker(redis_server.url, backoff_base=0.3, max_retries=3):
        wait_for(lambda: r.llen("image:retry") == 1, what="job on image:retry")
        entry = json.loads(r.lrange("image:retry", 0, -1)[0])
        assert entry["retryCount"] == 1 and entry["lastReason"] == "input-missing"
        make_photo(uploads / "user1" / "late.jpg")
        wait_for(lambda: r.llen("image:done"), what="done after retry")
    rec = records(r, "image:done")[0]
    assert rec["attempts"] == 2
    assert lists(r) == {"jobs": 0, "retry": 0, "done": 1, "failed": 0}
    assert r.zcard("image:retry:due") == 0


def test_retries_until_failed_with_backoff(r, redis_server, uploads):
    job = seed_job(uploads, name="never", ops=["thumbnail"])
    os.unlink(job["inputPath"])
    push(r, job)
    t0 = time.monotonic()
    with running_worker(redis_server.url, backoff_base=0.2, max_retries=2):
        wait_for(lambda: r.llen("image:failed"), what="failed record")
    elapsed = time.monotonic() - t0
    rec = records(r, "image:failed")[0]
    assert rec["reason"] == "input-missing" and rec["attempts"] == 3 and rec["retryCount"] == 2
    assert rec["jobId"] == "never"
    assert lists(r) == {"jobs": 0, "retry": 0, "done": 0, "failed": 1}
    # Two waits, each at least a tenth of its bound (0.2 s, then 0.4 s).
    assert elapsed >= 0.02 + 0.04


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("text", "unsupported-format"),
        ("svg", "unsupported-format"),  # one that refers to a file outside the upload
        ("huge", "too-large"),
        ("directory", "not-a-file"),
        ("fifo", "not-a-file"),
    ],
)
def test_errors_that_cannot_succeed_later_fail_at_once(r, redis_server, uploads, kind, reason):
    job = seed_job(uploads, name=f"bad-{kind}", ops=["thumbnail"])
    path = job["inputPath"]
    os.unlink(path)
    if kind == "text":
        open(path, "w").write("hello, not an image")
    elif kind == "svg":
        open(path, "w").write(
            '<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
            '<image href="/etc/passwd" width="10" height="10"/></svg>'
        )
    elif kind == "huge":
        make_photo(uploads / "user1" / f"bad-{kind}.jpg", size=(400, 300))
    elif kind == "directory":
        os.mkdir(path)
    else:
        os.mkfifo(path)
    push(r, job)
    with running_worker(redis_server.url, max_retries=3, limits=Limits(max_pixels=100_000)):
        wait_for(lambda: r.llen("image:failed"))
    rec = records(r, "image:failed")[0]
    assert rec["reason"] == reason and rec["attempts"] == 1
    assert lists(r)["retry"] == 0


def test_done_and_failed_lists_are_capped(r, redis_server, uploads):
    push(r, *[seed_job(uploads, name=f"c{i}", ops=["thumbnail"]) for i in range(5)])
    push(r, *["junk"] * 4)
    with running_worker(redis_server.url, workers=2, done_cap=3, failed_cap=2):
        wait_for(lambda: r.llen("image:jobs") == 0 and r.llen("image:done") == 3 and r.llen("image:failed") == 2)
        time.sleep(0.3)
    assert r.llen("image:done") == 3 and r.llen("image:failed") == 2


def test_allowed_roots_confine_reads_and_writes(r, redis_server, uploads, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    inside_ok = seed_job(uploads, name="ok", ops=["thumbnail"])
    read_outside = seed_job(uploads, name="in-out", ops=["thumbnail"])
    read_outside["inputPath"] = str(make_photo(outside / "x.jpg"))
    link = uploads / "user1" / "escape"
    link.symlink_to(outside)
    write_via_link = seed_job(uploads, name="link-out", ops=["thumbnail"], outputDir=str(link))
    push(r, inside_ok, read_outside, write_via_link)
    with running_worker(redis_server.url, allowed_roots=(os.path.realpath(uploads),)):
        wait_for(lambda: r.llen("image:done") + r.llen("image:failed") == 3)
    failed = {rec["jobId"]: rec["reason"] for rec in records(r, "image:failed")}
    assert failed == {"in-out": "path-not-allowed", "link-out": "path-not-allowed"}
    assert [d["jobId"] for d in records(r, "image:done")] == ["ok"]
    assert os.listdir(outside) == ["x.jpg"]


def test_outputs_replace_symlinks_instead_of_writing_through(r, redis_server, uploads, tmp_path):
    job = seed_job(uploads, name="sym", ops=["thumbnail"])
    os.makedirs(job["outputDir"])
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = os.path.join(job["outputDir"], "sym_thumbnail.webp")
    os.symlink(victim, target)
    push(r, job)
    with running_worker(redis_server.url):
        wait_for(lambda: r.llen("image:done"))
    assert victim.read_text() == "precious"
    assert not os.path.islink(target)
    with Image.open(target) as im:
        assert im.format == "WEBP"
    assert [f for f in os.listdir(job["outputDir"]) if f.endswith(".tmp")] == []


def test_rerun_overwrites_outputs(r, redis_server, uploads):
    job = seed_job(uploads, name="again", ops=["thumbnail"])
    push(r, job, job)
    with running_worker(redis_server.url):
        wait_for(lambda: r.llen("image:done") == 2)
    assert os.listdir(job["outputDir"]) == ["again_thumbnail.webp"]


def dead_worker_holding(r, payload: dict, wid: str = "deadhost-1-abc-0") -> str:
    """Redis as a worker that died mid-job leaves it: registered, job in flight, no lease."""
    r.sadd("image:workers", wid)
    r.rpush(f"image:processing:{wid}", json.dumps(payload))
    return wid


def test_jobs_of_a_dead_worker_are_recovered_as_an_attempt(r, redis_server, uploads):
    job = seed_job(uploads, name="orphan", ops=["thumbnail"], retryCount=1)
    wid = dead_worker_holding(r, job)
    with running_worker(redis_server.url, max_retries=3):
        wait_for(lambda: r.llen("image:done"))
    rec = records(r, "image:done")[0]
    assert rec["jobId"] == "orphan" and rec["attempts"] == 3 and rec["lastReason"] == "worker-died"
    assert not r.exists(f"image:processing:{wid}") and not r.sismember("image:workers", wid)


def test_poison_job_that_keeps_killing_workers_ends_failed(r, redis_server, uploads):
    job = seed_job(uploads, name="poison", ops=["thumbnail"], retryCount=3)
    dead_worker_holding(r, job)
    with running_worker(redis_server.url, max_retries=3):
        wait_for(lambda: r.llen("image:failed"))
    rec = records(r, "image:failed")[0]
    assert rec["jobId"] == "poison" and rec["reason"] == "worker-died" and rec["attempts"] == 4
    assert "died" in rec["error"]
    assert lists(r) == {"jobs": 0, "retry": 0, "done": 0, "failed": 1}


def test_live_worker_jobs_are_not_taken(r, redis_server, uploads):
    job = seed_job(uploads, name="busy", ops=["thumbnail"])
    wid = dead_worker_holding(r, job, wid="livehost-1-abc-0")
    r.set(f"image:heartbeat:{wid}", "1", px=60_000)
    with running_worker(redis_server.url):
        time.sleep(1.5)
    assert r.llen(f"image:processing:{wid}") == 1 and lists(r)["done"] == 0


def test_worker_registers_and_leaves_cleanly(r, redis_server):
    with running_worker(redis_server.url, workers=3) as w:
        wait_for(lambda: r.scard("image:workers") == 3)
        assert all(r.pttl(f"image:heartbeat:{wid}") > 0 for wid in w.ids)
    assert r.scard("image:workers") == 0 and not r.keys("image:heartbeat:*")


def test_a_slot_blocking_read_can_be_ended_by_its_name(r, redis_server):
    # A hard stop ends the slots' reads this way before it gives their jobs
    # back: a read still waiting would take a job just given back.
    slot = Queue(connector(redis_server.url, 30)("host-1-abc-0"), 0, 0)
    other = Queue(connector(redis_server.url, 30)("host-1-abc-1"), 0, 0)
    got: dict[str, object] = {}

    def read(queue: Queue, key: str) -> None:
        got[key] = queue.take(key, 30)

    readers = [threading.Thread(target=read, args=args) for args in ((slot, "a"), (other, "b"))]
    for t in readers:
        t.start()
    wait_for(lambda: sum(c.get("cmd") == "blmove" for c in r.client_list()) == 2, what="both reads blocked")
    t0 = time.monotonic()
    Queue(r, 0, 0).unblock(["host-1-abc-0"])
    readers[0].join(timeout=10)
    assert not readers[0].is_alive() and got["a"] is None and time.monotonic() - t0 < 5
    assert readers[1].is_alive(), "a read of a slot not named was ended"
    r.lpush("image:jobs", b"x")
    readers[1].join(timeout=10)
    assert got["b"] == b"x"


def test_worker_registers_again_after_redis_lost_its_data(r, redis_server):
    # Without re-registration a slot missing from image:workers would never
    # have its jobs recovered if it died.
    with running_worker(redis_server.url, workers=2, heartbeat_ttl=1.5) as w:
        wait_for(lambda: r.scard("image:workers") == 2)
        r.flushall()
        wait_for(lambda: {x.decode() for x in r.smembers("image:workers")} == set(w.ids), what="re-registration")
        assert all(r.exists(f"image:heartbeat:{wid}") for wid in w.ids)
