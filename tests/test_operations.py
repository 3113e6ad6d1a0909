"""The producer side, status and events, operator commands, metrics, the seed's
own producers (Node.js `redis` client, redis-cli), and three workers at once."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from conftest import WORKER_CMD, make_photo, push, records, running_worker, seed_job
from redis_server import env_without_redis, wait_for

from fastimg.producer import Producer, build_job, detect_image_type, store_upload
from fastimg.queue import status

NODE_DIR = Path(__file__).parent / "node"


def cli(*args: str, url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        WORKER_CMD + [*args, "-redis", url], capture_output=True, text=True, timeout=120, env=env_without_redis()
    )


# -- producer --------------------------------------------------------------------
def test_detect_image_type_by_content(tmp_path):
    from PIL import Image

    im = Image.new("RGB", (4, 4))
    for fmt, kind in (
        ("JPEG", "jpeg"),
        ("PNG", "png"),
        ("GIF", "gif"),
        ("WEBP", "webp"),
        ("BMP", "bmp"),
        ("TIFF", "tiff"),
    ):
        p = tmp_path / f"x.{fmt}"
        im.save(p, fmt)
        assert detect_image_type(p.read_bytes()[:4096]) == kind
    assert detect_image_type(b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>') == "svg"
    assert detect_image_type(b"%PDF-1.7") is None and detect_image_type(b"") is None


def test_store_upload_and_build_job_follow_the_seed(tmp_path):
    root = tmp_path / "uploads"
    path = store_upload(b"\xff\xd8\xffdata", root, "user123", "../../My Photo.jpg")
    assert path.parent == (root / "user123").resolve()
    uuid_part, name = path.name[:36], path.name[37:]
    assert len(uuid_part.split("-")) == 5 and name == "My Photo.jpg"
    job = build_job(path, "user123", root)
    assert list(job) == ["jobId", "inputPath", "outputDir", "operations", "timestamp", "retryCount"]
    assert job["jobId"] == path.stem and job["inputPath"] == str(path)
    assert job["outputDir"] == str((root / "user123" / "processed").resolve())
    assert job["operations"] == ["thumbnail", "blur", "low-quality"] and job["retryCount"] == 0
    assert abs(job["timestamp"] - time.time() * 1000) < 5000
    with pytest.raises(ValueError):
        store_upload(b"x", root, "../evil", "a.jpg")


def test_producer_enqueues_images_only(r, redis_server, tmp_path):
    root = tmp_path / "uploads"
    img = store_upload(make_photo(tmp_path / "p.jpg").read_bytes(), root, "u1", "p.jpg")
    txt = store_upload(b"hello", root, "u1", "notes.txt")
    producer = Producer(redis_server.client())
    job = producer.enqueue(img, "u1", root)
    assert job is not None and json.loads(r.lindex("image:jobs", 0)) == job
    assert producer.enqueue(txt, "u1", root) is None and r.llen("image:jobs") == 1
    assert status.read(r, job["jobId"])["state"] == "queued"


def test_producer_without_redis_warns_and_returns(tmp_path, caplog):
    root = tmp_path / "uploads"
    img = store_upload(make_photo(tmp_path / "p.jpg").read_bytes(), root, "u1", "p.jpg")
    producer = Producer(redis.Redis(port=1, socket_connect_timeout=0.5))
    with caplog.at_level("WARNING", logger="fastimg.producer"):
        assert producer.enqueue(img, "u1", root) is None
    assert "Redis not available" in caplog.text


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


# -- status and events ---------------------------------------------------------
def test_status_and_events_follow_the_job(r, redis_server, uploads):
    job = seed_job(uploads, name="watched")
    pubsub = redis_server.client().pubsub()
    pubsub.subscribe("image:events")
    pubsub.get_message(timeout=1)  # the subscription confirmation
    push(r, job)
    with running_worker(redis_server.url):
        wait_for(lambda: r.llen("image:done"))
    events = []
    while (m := pubsub.get_message(timeout=0.5)) is not None:
        events.append(json.loads(m["data"]))
    assert [e["state"] for e in events] == ["processing"] * 4 + ["done"]
    # Outputs are encoded at once; each event adds the one that is now in place.
    completed = [e["completed"] for e in events[:4]]
    assert [len(c) for c in completed] == [0, 1, 2, 3] and sorted(completed[3]) == sorted(job["operations"])
    assert all(completed[i] == completed[i + 1][:i] for i in range(3))
    st = status.read(r, "watched")
    assert st["state"] == "done" and [o["operation"] for o in st["outputs"]] == job["operations"]
    assert 0 < r.ttl("image:status:watched") <= 7 * 24 * 3600


def test_status_of_retrying_and_failed_jobs(r, redis_server, uploads):
    job = seed_job(uploads, name="gone", ops=["thumbnail"])
    Path(job["inputPath"]).unlink()
    push(r, job)
    with running_worker(redis_server.url, backoff_base=5.0, max_retries=1):
        wait_for(lambda: status.read(r, "gone").get("state") == "retrying")
        st = status.read(r, "gone")
        assert st["reason"] == "input-missing" and st["attempt"] == 1 and st["nextAttemptAt"] > time.time() * 1000
    push(r, seed_job(uploads, name="text", ops=["thumbnail"]))
    Path(uploads / "user1" / "text.jpg").write_text("not an image")
    with running_worker(redis_server.url):
        wait_for(lambda: status.read(r, "text").get("state") == "failed")
    assert status.read(r, "text")["reason"] == "unsupported-format"


# -- operator commands ---------------------------------------------------------
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


# -- metrics and health -----------------------------------------------------------
def fetch(port: int, path: str):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_and_health_endpoints(r, redis_server, uploads):
    push(r, seed_job(uploads, name="m1"), "junk")
    with running_worker(redis_server.url, metrics_port=0) as w:
        wait_for(lambda: r.llen("image:done") == 1 and r.llen("image:failed") == 1)
        port = w.health.port
        wait_for(lambda: fetch(port, "/healthz")[0] == 200)
        assert fetch(port, "/readyz")[0] == 200
        time.sleep(1.2)  # one sweep updates the queue gauges
        code, text = fetch(port, "/metrics")
        assert code == 200
        for line in (
            'fastimg_jobs_total{outcome="done",reason=""} 1.0',
            'fastimg_jobs_total{outcome="failed",reason="invalid-job"} 1.0',
            'fastimg_queue_length{queue="done"} 1.0',
            "fastimg_in_flight 0.0",
            'fastimg_stage_seconds_count{stage="decode"} 1.0',
            'fastimg_stage_seconds_count{stage="encode"} 1.0',
            "fastimg_redis_errors_total 0.0",
            "fastimg_backend_info{",
            "fastimg_live_workers 1.0",
        ):
            assert line in text, line
        assert fetch(port, "/nope")[0] == 404
        w.stopping.set()
        assert fetch(port, "/readyz")[0] == 503


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
