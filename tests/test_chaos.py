"""The worker under attack, against a real redis-server: hostile payloads,
connections killed mid-command, double signals, a slowloris on the metrics
port, symlinks flipped during jobs, memory admission, duplicate jobIds. Each
test ends with the invariant: every jobId on exactly one of done/failed, no
in-flight list left, no temporary file, every output decodes."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from conftest import WORKER_CMD, job_for, png_header_only, push, records, running_worker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from redis_server import RedisServer, env_without_redis, free_port, wait_for
from test_worker_process import WORKER_ACL

from fastimg.image import confine
from fastimg.queue.wire import loads


def tiny_photo(path: Path, colour=(40, 160, 60), size=(64, 48)) -> Path:
    Image.new("RGB", size, colour).save(path, "JPEG", quality=90)
    return path


def in_flight(r) -> int:
    return sum(r.llen(k) for k in r.scan_iter(match="image:processing:*"))


def assert_invariant(r, job_ids: Iterable[str], roots: Iterable[Path]) -> None:
    """Every jobId on exactly one of done/failed (as often as it was pushed:
    payloads that were not jobs have none), nothing pending or in flight, no
    temporary file, every output of a done job decodes."""
    done, failed = records(r, "image:done"), records(r, "image:failed")
    seen = Counter(rec.get("jobId") for rec in done + failed)
    assert seen == Counter(job_ids), (seen - Counter(job_ids), Counter(job_ids) - seen)
    assert r.llen("image:jobs") == 0 and r.llen("image:retry") == 0
    assert in_flight(r) == 0
    temps = [p for root in roots for p in Path(root).rglob("*.tmp")]
    assert temps == [], temps
    for rec in done:
        for out in rec["outputs"]:
            with Image.open(out["path"]) as im:
                assert im.size == (out["width"], out["height"])
                im.load()
    for raw in r.lrange("image:done", 0, -1) + r.lrange("image:failed", 0, -1):
        loads(raw)  # strict JSON: what Node's JSON.parse accepts


# -- payloads ------------------------------------------------------------------
def test_poison_payloads_end_as_failed_and_the_slot_goes_on(r, redis_server, uploads):
    good = tiny_photo(uploads / "user1" / "good.jpg")
    base = job_for(uploads, "x", good)
    big = json.dumps({"jobId": "big", "junk": "a" * (10 << 20)})
    poison = {
        "surrogate-id": json.dumps(dict(base, jobId="x\ud800")),
        "surrogate-path": json.dumps(dict(base, jobId="sp", inputPath=str(good) + "\ud800")),
        "surrogate-extra": json.dumps(dict(base, jobId="se", note="\udfff")),
        "nested": "[" * 200_000 + "]" * 200_000,
        "nan-timestamp": json.dumps(dict(base, jobId="nan"), allow_nan=True).replace("1737158400000", "NaN"),
        "inf-timestamp": json.dumps(dict(base, jobId="inf")).replace("1737158400000", "1e999"),
        "big": big,
        "bytes": b"\xff\xfe\x00junk",
    }
    with running_worker(redis_server.url, workers=1) as w:
        push(r, *poison.values())
        push(r, job_for(uploads, "after-poison", good))
        wait_for(
            lambda: r.llen("image:done") == 2 and r.llen("image:failed") == len(poison) - 1,
            what="a good job after the poison",
        )
        assert w.ready() and w.live_slots() == 1
        assert w.metrics.slot_restarts._value.get() == 0  # the wall held: nothing reached the slot
    failed = records(r, "image:failed")
    # A surrogate in an unknown field is no reason to refuse the job; it is
    # stored escaped, so Redis and Node can read the record.
    assert {rec["jobId"]: rec.get("note") for rec in records(r, "image:done")} == {"se": "\udfff", "after-poison": None}
    by_reason = Counter(rec["reason"] for rec in failed)
    assert by_reason["unsafe-job-id"] == 1 and by_reason["invalid-job"] >= 5
    sizes = [len(x) for x in r.lrange("image:failed", 0, -1)]
    assert max(sizes) < 64 * 1024, max(sizes)  # a 10 MB payload is not stored whole, nor twice
    [big_rec] = [rec for rec in failed if rec.get("rawBytes") == len(big)]
    assert big_rec["rawSha256"] and big_rec["raw"].startswith('{"jobId": "big"')
    assert_invariant(r, [rec.get("jobId") for rec in failed] + ["se", "after-poison"], [uploads])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
JOBLIKE = st.fixed_dictionaries(
    {
        "jobId": st.one_of(st.text(max_size=12), JSON),
        "inputPath": st.one_of(st.just("/nonexistent/x.jpg"), st.text(max_size=12), JSON),
        "outputDir": st.one_of(st.just("/tmp/fastimg-never"), st.text(max_size=12), JSON),
        "operations": st.one_of(st.lists(st.sampled_from(["thumbnail", "blur", "zoom"]), max_size=3), JSON),
    },
    optional={"retryCount": JSON, "timestamp": JSON, "params": JSON},
)
PAYLOAD = st.one_of(
    st.binary(max_size=200),
    JSON.map(lambda v: json.dumps(v, allow_nan=True)),
    JOBLIKE.map(lambda v: json.dumps(v, allow_nan=True)),
)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(payloads=st.lists(PAYLOAD, min_size=1, max_size=6))
def test_arbitrary_payloads_never_kill_a_slot(redis_server, payloads):
    r = redis_server.client()
    r.flushall()
    with running_worker(redis_server.url, workers=1, max_retries=1, backoff_base=0.01, backoff_cap=0.02) as w:
        push(r, *payloads)
        wait_for(
            lambda: r.llen("image:failed") + r.llen("image:done") == len(payloads),
            timeout=60,
            what="every payload's outcome",
        )
        assert w.live_slots() == 1 and w.metrics.slot_restarts._value.get() == 0
    assert r.llen("image:jobs") == 0 and r.llen("image:retry") == 0 and in_flight(r) == 0
    for raw in r.lrange("image:failed", 0, -1):
        loads(raw)
    r.close()


# -- connections killed ------------------------------------------------------------
def test_connections_killed_every_few_ms_lose_and_duplicate_nothing(r, redis_server, uploads):
    src = tiny_photo(uploads / "user1" / "src.jpg")
    ids = [f"k{i:03d}" for i in range(250)]
    # The test's own connections belong to another user, whom the killer spares:
    # a push retried after a lost reply would queue a job twice.
    r.execute_command("ACL", "SETUSER", "checker", "on", ">pw", "~*", "&*", "+@all")
    checker = redis_server.client(username="checker", password="pw")
    stop = threading.Event()
    kills = []

    def kill_loop() -> None:
        while not stop.is_set():
            kills.append(checker.execute_command("CLIENT", "KILL", "TYPE", "normal", "USER", "default"))
            time.sleep(random.uniform(0.002, 0.008))

    thread = threading.Thread(target=kill_loop, daemon=True)
    with running_worker(redis_server.url, workers=4, heartbeat_ttl=2.0, backoff_base=0.01) as w:
        thread.start()
        for job_id in ids:
            push(checker, job_for(uploads, job_id, src))
        wait_for(
            lambda: checker.llen("image:done") + checker.llen("image:failed") >= len(ids) * 0.9,
            timeout=120,
            what="most jobs done under fire",
        )
        stop.set()
        thread.join()
        wait_for(
            lambda: r.llen("image:done") + r.llen("image:failed") == len(ids) and in_flight(r) == 0,
            timeout=60,
            what="every outcome once the killing stopped",
        )
        assert w.live_slots() == 4
    assert sum(kills) > 50, sum(kills)
    assert_invariant(r, ids, [uploads])
    assert r.llen("image:done") == len(ids)  # good jobs all end done, whatever the connections did


# -- signals -----------------------------------------------------------------------
def start_worker(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        WORKER_CMD + list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env_without_redis(),
        **kw,
    )


def slow_png(path: Path, w: int = 6000, h: int = 4000) -> Path:
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, "PNG", compress_level=0)
    return path


# The idle slot's blocking read must not take the job given back. The worker
# ends that read with CLIENT UNBLOCK; a Redis user denied CLIENT waits for it.
@pytest.mark.parametrize("user", ["default", "denied-client"])
def test_second_signal_with_busy_and_idle_slots_exits_at_once(r, redis_server, uploads, user):
    slow = job_for(uploads, "slow", slow_png(uploads / "user1" / "slow.png"), ops=("thumbnail", "blur", "low-quality"))
    push(r, slow)
    address, limit = f"127.0.0.1:{redis_server.port}", 2.0
    if user != "default":
        rules = [rule for rule in WORKER_ACL.split() if not rule.startswith("+client|")]
        r.execute_command("ACL", "SETUSER", user, "reset", *rules)
        address, limit = f"redis://{user}:workerpw@{address}", 3.0
    p = start_worker("-redis", address, "-workers", "2", "--shutdown-timeout", "120")
    try:
        wait_for(lambda: in_flight(r), interval=0.005, what="the slow job in flight")
        p.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        out = p.communicate(timeout=30)[0]
        took = time.monotonic() - t0
    finally:
        p.kill()
    assert took < limit, (took, out)
    assert "cannot schedule" not in out and "Traceback" not in out and "Redis error" not in out, out
    time.sleep(1.0)  # anything still on its way to disk would land now
    if r.llen("image:done") == 0:
        where = {k: r.llen(k) for k in ["image:retry", "image:failed", *r.scan_iter(match="image:processing:*")]}
        assert [json.loads(j) for j in r.lrange("image:jobs", 0, -1)] == [slow], (out, where)  # unchanged, at the head
        assert not list((uploads / "user1").rglob("slow_*.webp")), "an output of a job put back landed"
    assert in_flight(r) == 0 and r.scard("image:workers") == 0
    assert not list(uploads.rglob("*.tmp"))


def test_shutdown_timeout_holds_to_within_a_second(r, redis_server, uploads):
    push(
        r,
        job_for(
            uploads,
            "slow",
            slow_png(uploads / "user1" / "slow.png", 8000, 6000),
            ops=("thumbnail", "blur", "low-quality"),
        ),
    )
    p = start_worker("-redis", f"127.0.0.1:{redis_server.port}", "-workers", "1", "--shutdown-timeout", "1")
    try:
        wait_for(lambda: in_flight(r), interval=0.005, what="the slow job in flight")
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=30)[0]
        took = time.monotonic() - t0
    finally:
        p.kill()
    assert took < 2.0, (took, out)
    assert in_flight(r) == 0 and r.llen("image:jobs") + r.llen("image:done") == 1


def test_configuration_errors_fail_fast(redis_server):
    locked = RedisServer(["--requirepass", "right"])
    cases = [
        (["-redis", f"127.0.0.1:{redis_server.port}", "-db", "99"], "DB index"),
        (["-redis", f"redis://:wrong@127.0.0.1:{locked.port}/0"], "credentials"),
        (["-redis", f"127.0.0.1:{locked.port}"], "Redis refused"),
        (["-redis", f"rediss://127.0.0.1:{redis_server.port}/0"], "TLS"),
    ]
    for args, needle in cases:
        t0 = time.monotonic()
        res = subprocess.run(WORKER_CMD + args, capture_output=True, text=True, timeout=60, env=env_without_redis())
        assert res.returncode == 2, (args, res.stdout)
        assert needle in res.stdout, res.stdout
        assert time.monotonic() - t0 < 15
    locked.close()


# -- the metrics port -------------------------------------------------------------
def test_slowloris_on_the_metrics_port_starves_no_job(r, redis_server, uploads):
    src = tiny_photo(uploads / "user1" / "src.jpg")
    port = free_port()

    def low_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    p = start_worker(
        "-redis",
        f"127.0.0.1:{redis_server.port}",
        "-workers",
        "2",
        "--metrics-port",
        str(port),
        preexec_fn=low_fd_limit,
    )
    idle: list[socket.socket] = []
    try:
        wait_for(lambda: _get(port, "/healthz") == 200, what="metrics port")
        for _ in range(400):
            try:
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                pass
        ids = [f"s{i:02d}" for i in range(40)]
        push(r, *[job_for(uploads, i, src) for i in ids])
        wait_for(lambda: r.llen("image:done") + r.llen("image:failed") == len(ids), timeout=60, what="outcomes")
        wait_for(lambda: _get(port, "/healthz") == 200, timeout=15, what="/healthz answering again")
    finally:
        for s in idle:
            s.close()
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=60)[0]
    assert r.llen("image:done") == len(ids), records(r, "image:failed")[:2]
    assert "Traceback" not in out and "BrokenPipe" not in out, out[-2000:]
    assert_invariant(r, ids, [uploads])


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status
    except OSError:
        return 0


def test_metrics_port_binds_to_loopback_by_default(r, redis_server):
    with running_worker(redis_server.url, metrics_port=0) as w:
        wait_for(lambda: w.health is not None)
        assert w.health.server.server_address[0] == "127.0.0.1"


# -- confinement -------------------------------------------------------------------
@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "no-openat2"])
def test_symlink_flipped_during_jobs_never_leads_outside(r, redis_server, uploads, tmp_path, monkeypatch, openat2):
    if not openat2:
        monkeypatch.setattr(confine, "use_openat2", False)
    outside = tmp_path / "outside"
    (outside / "out").mkdir(parents=True)
    tiny_photo(outside / "in.jpg", colour=(220, 20, 20))  # red: must never be read
    inside = uploads / "user1" / "real"
    (inside / "out").mkdir(parents=True)
    tiny_photo(inside / "in.jpg", colour=(20, 220, 20))
    link = uploads / "user1" / "flip"
    link.symlink_to("real")
    stop = threading.Event()

    def flip() -> None:
        n = 0
        while not stop.is_set():
            tmp = uploads / "user1" / f".flip{n}"
            tmp.symlink_to(outside if n % 2 else "real")
            os.replace(tmp, link)
            n += 1
            time.sleep(0.0005)

    ids = [f"f{i:03d}" for i in range(120)]
    jobs = [dict(job_for(uploads, i, link / "in.jpg"), outputDir=str(link / "out")) for i in ids]
    thread = threading.Thread(target=flip, daemon=True)
    thread.start()
    try:
        with running_worker(redis_server.url, workers=3, allowed_roots=(os.path.realpath(uploads),)):
            push(r, *jobs)
            wait_for(lambda: r.llen("image:done") + r.llen("image:failed") == len(ids), timeout=120)
    finally:
        stop.set()
        thread.join()
    (uploads / "user1" / ".flip-end").symlink_to("real")
    os.replace(uploads / "user1" / ".flip-end", link)  # records name outputs through the link
    assert sorted(os.listdir(outside)) == ["in.jpg", "out"] and os.listdir(outside / "out") == []
    reasons = Counter(rec["reason"] for rec in records(r, "image:failed"))
    assert set(reasons) <= {"path-not-allowed"}, reasons
    for rec in records(r, "image:done"):
        with Image.open(rec["outputs"][0]["path"]) as im:
            red, green, _ = np.asarray(im.convert("RGB"), dtype=float).reshape(-1, 3).mean(axis=0)
        assert green > red, (rec["jobId"], red, green)  # made from the inside image
    assert_invariant(r, ids, [uploads, outside])


# -- memory -----------------------------------------------------------------------
def test_memory_admission_makes_big_jobs_wait_and_refuses_what_never_fits(r, redis_server, uploads):
    budget = 300 << 20
    bigs = []
    for i in range(3):  # ~210 MB each by the estimate: one at a time fits
        path = uploads / "user1" / f"big{i}.png"
        Image.new("RGB", (3000, 3000), (i * 40, 90, 160)).save(path, compress_level=1)
        bigs.append(job_for(uploads, f"big{i}", path, ops=("thumbnail", "blur", "low-quality")))
    huge = uploads / "user1" / "huge.png"
    huge.write_bytes(png_header_only(9000, 9000))  # 81 MP: about 1 GB to decode
    small = tiny_photo(uploads / "user1" / "small.jpg")
    with running_worker(redis_server.url, workers=3, memory_budget=budget) as w:
        push(r, *bigs, job_for(uploads, "huge", huge), job_for(uploads, "small", small))
        wait_for(lambda: r.llen("image:done") + r.llen("image:failed") == 5, timeout=120)
        assert w.budget.peak <= budget and w.budget.used == 0
        assert w.budget.peak >= 200 << 20  # the big ones were admitted, one at a time
    [rec] = records(r, "image:failed")
    assert rec["jobId"] == "huge" and rec["reason"] == "too-large" and rec["attempts"] == 1
    assert "MB of memory" in rec["error"] and "budget is 300 MB" in rec["error"]
    assert_invariant(r, ["big0", "big1", "big2", "huge", "small"], [uploads])


def test_job_params_cannot_ask_for_huge_outputs(r, redis_server, uploads):
    src = tiny_photo(uploads / "user1" / "src.jpg")
    push(r, job_for(uploads, "huge-params", src, params={"thumbnail": {"width": 10000, "height": 10000}}))
    with running_worker(redis_server.url):
        wait_for(lambda: r.llen("image:failed"))
    [rec] = records(r, "image:failed")
    assert rec["reason"] == "invalid-job" and "4096" in rec["error"]


# -- duplicates and takeovers -----------------------------------------------------
def test_duplicate_job_ids_in_flight_never_mix_their_outputs(r, redis_server, uploads):
    ops = ("thumbnail", "blur", "low-quality")
    red = tiny_photo(uploads / "user1" / "red.jpg", (220, 20, 20), (900, 700))
    green = tiny_photo(uploads / "user1" / "green.jpg", (20, 220, 20), (900, 700))
    ids = [f"d{i:02d}" for i in range(25)]
    with running_worker(redis_server.url, workers=4):
        for i in ids:
            push(r, job_for(uploads, i, red, ops), job_for(uploads, i, green, ops))
        wait_for(lambda: r.llen("image:done") == 2 * len(ids), timeout=120)
    for i in ids:
        colours = set()
        for op in ops:
            with Image.open(uploads / "user1" / "processed" / f"{i}_{op}.webp") as im:
                rgb = np.asarray(im.convert("RGB"), dtype=float).reshape(-1, 3).mean(axis=0)
            colours.add("red" if rgb[0] > rgb[1] else "green")
        assert len(colours) == 1, (i, colours)
    assert not list(uploads.rglob("*.tmp"))


def test_owner_whose_job_was_taken_over_discards_its_outputs(r, redis_server, uploads):
    job = job_for(uploads, "taken", slow_png(uploads / "user1" / "taken.png", 5000, 4000), ops=("thumbnail",))
    push(r, job)
    with running_worker(redis_server.url, workers=1, heartbeat_ttl=30.0):
        key = wait_for(lambda: next(iter(r.scan_iter(match="image:processing:*")), None), interval=0.005)
        # What a recovery after a lapsed lease does: the job leaves the slot's list.
        raw = r.lrange(key, 0, -1)[0]
        r.lrem(key, 1, raw)
        r.rpush("image:retry:elsewhere", raw)
        time.sleep(0.5)
        wait_for(lambda: in_flight(r) == 0, timeout=60)
        time.sleep(0.5)
    assert r.llen("image:done") == 0 and r.llen("image:failed") == 0
    assert not (uploads / "user1" / "processed" / "taken_thumbnail.webp").exists()
    assert not list(uploads.rglob("*.tmp"))


@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "no-openat2"])
def test_a_directory_swapped_for_a_symlink_after_the_check_is_refused_at_open(tmp_path, monkeypatch, openat2):
    from fastimg.image.errors import PermanentError
    from fastimg.image.limits import Limits
    from fastimg.image.read import read_input
    from fastimg.image.write import Writer
    from fastimg.queue.jobs import parse_job

    if not openat2:
        monkeypatch.setattr(confine, "use_openat2", False)
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "u" / "d").mkdir(parents=True)
    (outside / "d").mkdir(parents=True)
    tiny_photo(root / "u" / "d" / "in.jpg")
    tiny_photo(outside / "d" / "in.jpg")
    job = parse_job(
        json.dumps(
            job_for(root.parent, "j", root / "u" / "d" / "in.jpg") | {"outputDir": str(root / "u" / "d" / "out")}
        ),
        (os.path.realpath(root),),
    )
    os.rename(root / "u", tmp_path / "moved")
    (root / "u").symlink_to(outside)  # after the job's check, before any open
    with pytest.raises(PermanentError) as e:
        read_input(job.input_path, Limits(), job.input_at)
    assert e.value.reason == "path-not-allowed"
    with pytest.raises(PermanentError) as e:
        Writer().open(job)
    assert e.value.reason == "path-not-allowed"
    assert sorted(os.listdir(outside / "d")) == ["in.jpg"]


def test_a_slot_that_dies_anyway_is_restarted_and_counted(r, redis_server, uploads, monkeypatch):
    from fastimg.queue.lists import Queue

    real_take = Queue.take
    calls = []

    def take_with_a_bug(self, worker_id, timeout):
        calls.append(worker_id)
        if len(calls) == 1:
            raise RuntimeError("a bug outside the wall around jobs")
        return real_take(self, worker_id, timeout)

    monkeypatch.setattr(Queue, "take", take_with_a_bug)
    with running_worker(redis_server.url, workers=1) as w:
        wait_for(lambda: w.metrics.slot_restarts._value.get() == 1, what="the slot restarted")
        push(r, job_for(uploads, "after-restart", tiny_photo(uploads / "user1" / "a.jpg")))
        wait_for(lambda: r.llen("image:done") == 1, what="a job on the restarted slot")
        assert w.ready() and w.live_slots() == 1
    assert_invariant(r, ["after-restart"], [uploads])
