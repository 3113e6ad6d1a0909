"""Redis with replicas and Sentinel: the URL, every command reaching the
primary through it, and failovers with jobs flowing (a primary SIGKILLed, a
primary demoted while alive, the old primary back as a replica, every
Sentinel unreachable for a while). The servers are real: a primary, a
replica and three Sentinels on loopback (tests/sentinel_set.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from conftest import WORKER_CMD, make_photo, records, running_worker
from output import Output
from redis.crc import key_slot
from redis_server import RedisServer, env_without_redis, free_port, wait_for
from sentinel_set import DATA_PASSWORD, SERVICE, Flow, SentinelSet, outcomes
from test_chaos import in_flight
from test_serve_process import ServeProcess, upload

from fastimg.producer import Producer, store_upload
from fastimg.queue import status
from fastimg.queue.address import Acks, parse
from fastimg.queue.connect import answers, client, describe, redis_url
from fastimg.queue.lists import Queue


def photo_bytes(tmp: Path) -> bytes:
    return make_photo(tmp / "src.jpg", size=(64, 48)).read_bytes()


# -- the URL -------------------------------------------------------------------------
def test_sentinel_url_and_its_credentials():
    url = "redis+sentinel://:data%40pw@s1:26380,[::1],s3:5000/images/2?wait_replicas=1&ssl_cert_reqs=none"
    a = parse(url)
    assert a.sentinels == (("s1", 26380), ("::1", 26379), ("s3", 5000)) and a.service == "images" and a.db == 2
    assert a.node["password"] == "data@pw" and "password" not in a.sentinel  # data nodes' and Sentinels' apart
    assert a.acks == Acks(1, 1000) and not a.tls
    tls = parse("rediss+sentinel://u:p@s1/images?sentinel_password=spw&ssl_ca_certs=/ca.pem")
    assert tls.tls and tls.sentinel["ssl"] and tls.sentinel["ssl_ca_certs"] == tls.node["ssl_ca_certs"] == "/ca.pem"
    assert tls.sentinel["password"] == "spw" and tls.node["username"] == "u"
    assert describe(url) == "Sentinel s1:26380,::1:26379,s3:5000, service images, DB: 2, " + (
        "writes acknowledged by 1 replica(s) within 1000 ms"
    )
    env = {
        "REDIS_PASSWORD": "d",
        "REDIS_SENTINEL_USERNAME": "watcher",
        "REDIS_SENTINEL_PASSWORD": "s&p",
        "REDIS_DB": "3",
    }
    assert redis_url("redis+sentinel://s1,s2/images", None, env) == (
        "redis+sentinel://:d@s1,s2/images/3?sentinel_username=watcher&sentinel_password=s%26p"
    )
    assert redis_url(None, 1, {"REDIS_URL": "redis+sentinel://s1/images/3"}) == "redis+sentinel://s1/images/1"
    for bad, needle in (
        ("redis+sentinel://s1:26379", "service_name"),
        ("redis+sentinel://s1:x/images", "port"),
        ("redis+sentinel://s1,,s2/images", "empty"),
        ("redis://h:1?sentinel_password=x", "belong to"),
        ("redis://h:1?wait_replicas=many", "wait_replicas"),
        ("redis+cluster://h:1", "Cluster is not supported"),
    ):
        with pytest.raises(ValueError, match=needle):
            parse(bad)


# -- every command, through Sentinel ---------------------------------------------------
@pytest.fixture(scope="module")
def sentinels():
    topology = SentinelSet()
    yield topology
    topology.close()


def test_every_command_reaches_the_primary_through_sentinel(sentinels, uploads, tmp_path):
    """submit, stats, the worker (REDIS_URL and -db), requeue-failed, purge-*,
    serve and fastimg.producer, each given the Sentinel URL; the Sentinels'
    password from REDIS_SENTINEL_PASSWORD, the data nodes' in the URL."""
    primary = sentinels.primary()
    primary.flushall()
    env = env_without_redis() | sentinels.env

    def cli(*args: str) -> subprocess.CompletedProcess:
        argv = WORKER_CMD + [*args, "-redis", sentinels.url]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
        assert res.returncode == 0, res
        return res

    photo = make_photo(tmp_path / "holiday.jpg", size=(64, 48))
    assert "queued " in cli("submit", str(photo), "--uploads-root", str(uploads), "--user", "user1").stdout
    assert json.loads(cli("stats", "--json").stdout)["jobs"] == 1
    worker = subprocess.Popen(
        WORKER_CMD + ["-workers", "1", "-db", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env | {"REDIS_URL": sentinels.url},
    )
    out = Output(worker)
    try:
        wait_for(lambda: primary.llen("image:done") == 1, what="the submitted job done")
    finally:
        worker.send_signal(signal.SIGTERM)
        text = out.close()
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in sentinels.sentinels)
    assert f"[MAIN] Redis: Sentinel {hosts}, service {SERVICE}, DB: 0" in text and worker.returncode == 0, text
    failed = {**records(primary, "image:done")[0], "status": "failed", "reason": "io-error"}
    primary.lpush("image:failed", json.dumps(failed))
    assert "requeued 1 job(s)" in cli("requeue-failed").stdout and primary.llen("image:jobs") == 1
    assert "deleted 1" in cli("purge-done").stdout and "deleted 0" in cli("purge-failed", "-y").stdout
    primary.delete("image:jobs")

    producer = Producer.from_url(sentinels.full_url(wait_replicas=1))
    job = producer.enqueue(store_upload(photo.read_bytes(), uploads, "user1", "p.jpg"), "user1", uploads)
    replica = next(sentinels.node(p) for p in sentinels.nodes if p != sentinels.primary_port())
    assert job and json.loads(replica.lindex("image:jobs", 0))["jobId"] == job["jobId"]  # acknowledged: there

    args = ["-redis", sentinels.url, "--data-dir", str(tmp_path / "serve"), "--uploads", str(uploads)]
    with ServeProcess(args, env=env) as serve:
        res = upload(serve.url, photo)
        assert res.status_code == 201, res.text
        wait_for(lambda: primary.llen("image:done") == 2, what="the upload and the producer's job done")
        assert "[REDIS] Using the configured Redis at Sentinel" in serve.output()


def test_sentinel_configuration_errors_fail_fast(sentinels):
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in sentinels.sentinels)
    cases = [
        (sentinels.env | {"REDIS_SENTINEL_PASSWORD": "wrong"}, sentinels.url, "refused the credentials"),
        ({}, sentinels.url, "REDIS_SENTINEL_PASSWORD"),
        (sentinels.env, f"redis+sentinel://:{DATA_PASSWORD}@{hosts}/elsewhere", "no Sentinel knows a service"),
        (sentinels.env, f"redis+sentinel://:wrong@{hosts}/{SERVICE}", "Redis refused the credentials"),
        (sentinels.env, f"rediss+sentinel://:{DATA_PASSWORD}@{hosts}/{SERVICE}", "TLS"),
    ]
    for env, url, needle in cases:
        res = subprocess.run(
            WORKER_CMD + ["-redis", url], capture_output=True, text=True, timeout=60, env=env_without_redis() | env
        )
        assert res.returncode == 2 and needle in res.stdout, (url, env, res.stdout)


def test_sentinel_over_tls(uploads, tmp_path):
    """rediss+sentinel://: TLS to the Sentinel and to the primary it names,
    with redis-py's ssl_* parameters (here the test CA) applying to both."""
    tls = Path(__file__).parent / "data" / "tls"
    certs = ["--tls-cert-file", str(tls / "server.crt"), "--tls-key-file", str(tls / "server.key")]
    certs += ["--tls-ca-cert-file", str(tls / "ca.crt"), "--tls-auth-clients", "no"]
    port = free_port()
    primary = RedisServer([*certs, "--tls-port", str(port), "--port", "0"], port=port)
    sentinel_port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port 0\ntls-port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\ntls-replication yes\n"
        + "".join(f"{k.removeprefix('--')} {v}\n" for k, v in zip(certs[::2], certs[1::2], strict=True))
        + f"sentinel monitor {SERVICE} 127.0.0.1 {port} 1\n"
    )
    sentinel = subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
    try:
        url = f"rediss+sentinel://127.0.0.1:{sentinel_port}/{SERVICE}?ssl_ca_certs={tls / 'ca.crt'}"
        wait_for(lambda: answers(url), timeout=30, what="the primary through the TLS Sentinel")
        conn = client(url)
        photo = photo_bytes(tmp_path)
        job = Producer(conn).enqueue(store_upload(photo, uploads, "user1", "t.jpg"), "user1", uploads)
        with running_worker(url):
            wait_for(lambda: conn.llen("image:done") == 1, what="the job done over TLS")
        assert records(conn, "image:done")[0]["jobId"] == job["jobId"]
        assert conn.connection_pool.connection_kwargs["ssl_ca_certs"] == str(tls / "ca.crt")
    finally:
        sentinel.terminate()
        sentinel.wait(10)
        primary.close()


# -- a demoted primary, and writes acknowledged by replicas ---------------------------
@pytest.fixture
def primary_and_replica():
    primary = RedisServer(["--repl-diskless-sync-delay", "0"])
    replica = RedisServer(["--repl-diskless-sync-delay", "0", "--replicaof", "127.0.0.1", str(primary.port)])
    conn = primary.client()
    conn.set("image:probe", 1)
    # A replica acknowledges promptly only once its first sync has settled.
    wait_for(lambda: conn.execute_command("WAIT", 1, 100) == 1, what="the replica acknowledging writes")
    conn.delete("image:probe")
    yield primary, replica
    replica.close()
    primary.close()


def test_a_demoted_primary_is_a_failover_not_an_error(primary_and_replica):
    """READONLY (a write) and UNBLOCKED (a blocked read) come only from a
    primary turned replica: both drop the connection and raise
    ConnectionError, which every caller waits out, reconnecting."""
    primary, replica = primary_and_replica
    demoted = Queue(client(replica.url))
    with pytest.raises(redis.ConnectionError, match="demoted"):
        demoted.done("slot", b"{}", {"jobId": "x"}, "token")
    assert not demoted.conn.connection_pool._available_connections[0].is_connected
    blocked: dict = {}
    reader = Queue(client(primary.url))

    def take() -> None:
        try:
            reader.take("slot", 10)
        except redis.RedisError as e:
            blocked["error"] = e

    thread = threading.Thread(target=take)
    thread.start()
    wait_for(lambda: primary.client().info("clients")["blocked_clients"] == 1)
    primary.client().replicaof("127.0.0.1", replica.port)
    thread.join(10)
    assert isinstance(blocked["error"], redis.ConnectionError) and "demoted" in str(blocked["error"])


def test_writes_count_once_a_replica_has_them(primary_and_replica, uploads, tmp_path):
    """With wait_replicas=1, a producer reports a job queued, and a worker a
    job done, only once the replica has it; while the replica is away the
    worker keeps the job's outcome unannounced and asks again."""
    primary, replica = primary_and_replica
    conn = primary.client()
    url = f"{primary.url}?wait_replicas=1&wait_timeout_ms=100"
    photo = photo_bytes(tmp_path)
    confirmed = Producer.from_url(url).enqueue(store_upload(photo, uploads, "user1", "a.jpg"), "user1", uploads)
    assert confirmed and replica.client().llen("image:jobs") == 1
    replica.proc.kill()
    replica.proc.wait()
    path = store_upload(photo, uploads, "user1", "b.jpg")
    assert Producer.from_url(url).enqueue(path, "user1", uploads) is None  # queued, not confirmed
    assert conn.llen("image:jobs") == 2
    jobs = (confirmed["jobId"], path.stem)
    with running_worker(url) as worker:
        wait_for(lambda: conn.llen("image:done") == 1, what="the first job recorded on the primary")
        wait_for(lambda: worker.metrics.redis_errors._value.get() >= 3, what="the slot asking the replica again")
        assert status.read(conn, jobs[0])["state"] == "processing" and conn.llen("image:jobs") == 1
        replica.start()
        wait_for(lambda: [status.read(conn, j).get("state") for j in jobs] == ["done", "done"])
    assert sorted(r["jobId"] for r in records(conn, "image:done")) == sorted(jobs)
    assert in_flight(conn) == 0


# -- Redis Cluster ---------------------------------------------------------------------
def test_redis_cluster_is_refused_at_start(tmp_path):
    # The cluster bus takes a port of its own (by default the port + 10000, often past 65535 here).
    options = ["--cluster-enabled", "yes", "--cluster-port", str(free_port())]
    cluster = RedisServer(options + ["--cluster-config-file", str(tmp_path / "nodes.conf")])
    try:
        for args in (
            ["-redis", f"127.0.0.1:{cluster.port}"],
            ["stats", "-redis", f"127.0.0.1:{cluster.port}"],
            ["-redis", f"redis+cluster://127.0.0.1:{cluster.port}"],
        ):
            res = subprocess.run(WORKER_CMD + args, capture_output=True, text=True, timeout=60, env=env_without_redis())
            assert res.returncode == 2 and "Redis Cluster is not supported" in res.stdout + res.stderr, res
    finally:
        cluster.close()
    assert key_slot(b"image:jobs") != key_slot(b"image:done")  # the probe's two keys: never one slot


# -- failovers with jobs flowing ---------------------------------------------------------
def assert_exactly_once(conn, flow: Flow) -> None:
    """Every confirmed job exactly once on image:done, an unconfirmed one at
    most once, nothing failed, pending or in flight."""
    seen = outcomes(conn)
    assert not records(conn, "image:failed"), records(conn, "image:failed")
    missing = [j for j in flow.confirmed if seen[j] != 1]
    assert not missing, (missing, {j: seen[j] for j in missing})
    assert all(seen[j] <= 1 for j in flow.unconfirmed)
    assert set(seen) <= set(flow.confirmed) | set(flow.unconfirmed)
    assert conn.llen("image:jobs") == 0 and conn.llen("image:retry") == 0
    assert not [k for k in conn.scan_iter(match="image:processing:*") if conn.llen(k)]


def test_primary_killed_with_jobs_flowing(uploads, tmp_path):
    """SIGKILL of the primary while a producer queues (waiting for a replica
    to acknowledge each job) and two workers take jobs: the workers find the
    promoted replica by themselves and go on within seconds; every job the
    producer was told was queued ends on image:done exactly once. The old
    primary comes back, empty, and Sentinel makes it a replica: nothing
    reaches it meanwhile, and jobs go on flowing."""
    topology = SentinelSet()
    try:
        with jobs_flowing(topology, uploads, tmp_path) as (flow, ours):
            old = topology.primary_port()
            wait_for(done_on(topology.node(old), more_than=30), what="jobs flowing")
            topology.kill(old)
            killed = time.monotonic()
            new = wait_for(another_primary(topology, old), timeout=60, what="a new primary")
            promoted = time.monotonic()
            primary = topology.node(new)
            before = primary.llen("image:done")
            wait_for(lambda: primary.llen("image:done") > before + 5, timeout=30, what="work resuming")
            resumed = time.monotonic()
            topology.restart(old)
            reached = set()

            def replica_again() -> bool:
                reached.update(ours & client_names(topology.node(old)))
                return topology.role(old) == "slave"

            wait_for(replica_again, timeout=60, interval=0.2, what="the old primary a replica")
            assert not reached, reached
            wait_for(lambda: topology.node(old).info("replication")["master_link_status"] == "up", timeout=30)
            after = primary.llen("image:done")
            wait_for(done_on(primary, more_than=after + 10), timeout=30, what="jobs after the return")
            flow.end(primary)
        print(f"promotion {promoted - killed:.1f}s after the kill; work resumed {resumed - promoted:.1f}s after it")
        assert resumed - promoted < 15
        assert_exactly_once(primary, flow)
        assert flow.confirmed and flow.unconfirmed  # unconfirmed: while the new primary had no replica
    finally:
        topology.close()


def test_primary_demoted_alive_then_every_sentinel_unreachable(uploads, tmp_path):
    """A manual failover leaves the old primary up, taking writes until
    Sentinel demotes it ~10 s later: the workers move to the new one within
    a second or two by themselves. Then every Sentinel stops answering:
    connections in place go on; dropped ones wait for a Sentinel, and work
    resumes once they answer again."""
    topology = SentinelSet()
    try:
        with jobs_flowing(topology, uploads, tmp_path) as (flow, ours):
            old = topology.primary_port()
            wait_for(done_on(topology.node(old), more_than=20), what="jobs flowing")
            topology.sentinels[0].client.execute_command("SENTINEL", "FAILOVER", SERVICE)
            new = wait_for(another_primary(topology, old), timeout=60, what="a new primary")
            switched = time.monotonic()
            wait_for(lambda: not ours & client_names(topology.node(old)), timeout=10, what="slots off the old primary")
            moved = time.monotonic() - switched
            assert topology.role(old) == "master", "Sentinel demoted it first: nothing was shown"
            primary = topology.node(new)
            wait_for(done_on(primary, more_than=primary.llen("image:done") + 5), timeout=30, what="work on the new one")

            for sentinel in topology.sentinels:
                sentinel.pause()
            try:
                wait_for(done_on(primary, more_than=primary.llen("image:done") + 5), timeout=30, what="work going on")
                primary.client_kill_filter(_type="normal", skipme=True)  # every client must ask a Sentinel again
                stalled = primary.llen("image:done")
                time.sleep(3)  # the outage
                assert primary.llen("image:done") <= stalled + 2 * len(ours)  # at most what was in hand
            finally:
                for sentinel in topology.sentinels:
                    sentinel.resume()
            back = time.monotonic()
            wait_for(done_on(primary, more_than=primary.llen("image:done") + 5), timeout=30, what="work resuming")
            resumed = time.monotonic() - back
            flow.end(primary)
        print(
            f"slots off the old primary {moved:.1f}s after the switch; work resumed {resumed:.1f}s after the Sentinels"
        )
        assert moved < 5 and resumed < 15
        assert_exactly_once(primary, flow)
    finally:
        topology.close()


@contextmanager
def jobs_flowing(topology: SentinelSet, uploads: Path, tmp_path: Path):
    """A producer waiting for a replica's acknowledgement of each job, and two
    workers of two slots, through the Sentinels; yields the producer's flow
    and the workers' slot ids."""
    url = topology.full_url()
    flow = Flow(topology.full_url(wait_replicas=1, wait_timeout_ms=500), uploads, photo_bytes(tmp_path))
    settings = {"workers": 2, "heartbeat_ttl": 15.0, "max_retries": 10}
    with running_worker(url, **settings) as one, running_worker(url, **settings) as two:
        yield flow, {*one.ids, *two.ids}


def another_primary(topology: SentinelSet, old: int):
    return lambda: (p := topology.primary_port()) not in (None, old) and p


def done_on(conn, more_than: int):
    return lambda: conn.llen("image:done") > more_than


def client_names(conn) -> set[str]:
    return {c["name"] for c in conn.client_list()}
