"""`gpu-image-worker serve` stopping and staying up: signals to its whole
process group, its embedded Redis killed, the port that Redis takes, a data
directory it cannot write, and a start that opens it to the network."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
from conftest import DATA, make_photo
from redis_server import env_without_redis, free_port, wait_for
from test_serve_process import ServeProcess, upload

from fastimg.serve.embedded import EmbeddedRedis, port_is_free

PHOTO = DATA / "rocket.jpg"
SERVE = [sys.executable, "-m", "fastimg.cli.main", "serve"]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read().lower()
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("how", ["ctrl-c", "systemd"])
def test_a_stop_signal_to_every_process_reaches_redis_only_through_serve(tmp_path, how):
    """Ctrl-C in a terminal and `timeout` signal serve's whole process group;
    systemd signals every process of the unit. The slots must still record
    or give back their jobs: the embedded Redis stops after them."""
    data = tmp_path / "data"
    photos = [make_photo(tmp_path / f"p{i}.jpg", size=(2000, 1500), seed=i) for i in range(3)]
    args = ["--embedded", "--redis-port", "0", "-workers", "2", "-max-retries", "0"]
    with ServeProcess(args + ["--shutdown-timeout", "10", "--data-dir", str(data)]) as serve:
        conn = redis.Redis(port=serve.embedded_port())
        valkey = conn.info("server")["process_id"]
        ids = [upload(serve.url, photos[i % 3]).json()["files"][0]["jobId"] for i in range(24)]
        wait_for(lambda: any(conn.llen(k) for k in conn.scan_iter("image:processing:*")), what="jobs in hand")
        started = time.monotonic()
        if how == "ctrl-c":
            os.killpg(serve.proc.pid, signal.SIGINT)
        else:
            os.kill(serve.proc.pid, signal.SIGTERM)
            os.kill(valkey, signal.SIGTERM)
        rc = serve.proc.wait(60)
        took = time.monotonic() - started
        serve.reader.join(5)
        out = serve.output()
    assert rc == 0, out
    assert "Redis error" not in out, out
    assert took < 10 + 5, f"stopped after {took:.1f}s against --shutdown-timeout 10\n{out}"
    assert not _alive(valkey), "the embedded Redis outlived serve"

    again = EmbeddedRedis(data / "redis", port=0).start()
    try:
        conn = redis.Redis(port=again.port)
        done = {json.loads(x)["jobId"] for x in conn.lrange("image:done", 0, -1)}
        waiting = {json.loads(x)["jobId"] for x in conn.lrange("image:jobs", 0, -1)}
        failed = [json.loads(x) for x in conn.lrange("image:failed", 0, -1)]
        assert failed == [] and list(conn.scan_iter("image:processing:*")) == [], failed
        assert done | waiting == set(ids) and not done & waiting, (done, waiting)
        print(f"{how}: stopped {took:.1f}s after the signal; {len(done)} done, {len(waiting)} waiting, none lost")
    finally:
        again.stop()


def test_serve_killed_takes_its_embedded_redis_along(tmp_path):
    serve = ServeProcess(["--embedded", "--redis-port", "0", "-workers", "0", "--data-dir", str(tmp_path)])
    valkey = redis.Redis(port=serve.embedded_port()).info("server")["process_id"]
    serve.proc.kill()
    serve.proc.wait(10)
    wait_for(lambda: not _alive(valkey), timeout=10, what="the embedded Redis to die with serve")


def test_a_killed_embedded_redis_is_restarted_and_healthz_tells_the_truth(tmp_path):
    args = ["--embedded", "--redis-port", str(free_port()), "-workers", "1", "--data-dir", str(tmp_path)]
    with ServeProcess(args) as serve:
        port = serve.embedded_port()
        first = upload(serve.url, PHOTO).json()["files"][0]["jobId"]
        wait_for(lambda: httpx.get(f"{serve.url}/jobs/{first}").json().get("state") == "done", what="first job")
        os.kill(redis.Redis(port=port).info("server")["process_id"], signal.SIGKILL)
        # Hold its port so that the restarts fail for a while.
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # its closed connections wait there
        wait_for(lambda: _listening(holder, port), timeout=5, interval=0.001, what="the port to be free")
        try:
            wait_for(lambda: "[REDIS] Restart failed" in serve.output(), what="a failed restart")
            health = httpx.get(serve.url + "/healthz")
            assert health.status_code == 503, health.text
            body = health.json()
            assert body["ok"] is False and body["redis"] is False and body["embedded"]["running"] is False
            assert body["embedded"]["lastExit"] == "was killed by SIGKILL"
            refused = upload(serve.url, PHOTO).json()
            assert refused["queued"] is False and refused["queueError"] == "redis-unavailable"
        finally:
            holder.close()
        wait_for(lambda: httpx.get(serve.url + "/healthz").status_code == 200, timeout=60, what="healthz 200 again")
        assert "killed by SIGKILL; restarting it" in serve.output()
        wait_for(lambda: "restarted on" in serve.output(), timeout=10, what="the restart's log line")
        assert "AOF replayed" in serve.output(), serve.output()
        assert httpx.get(f"{serve.url}/jobs/{first}").json()["state"] == "done"  # from the AOF
        assert httpx.get(serve.url + "/healthz").json()["embedded"]["restarts"] == 1
        second = upload(serve.url, PHOTO).json()["files"][0]
        assert second["queued"] is True
        wait_for(
            lambda: httpx.get(f"{serve.url}/jobs/{second['jobId']}").json().get("state") == "done",
            timeout=60,
            what="a job after the restart",
        )


def _listening(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError:
        return False
    return True


def _time_wait_on(port: int) -> bool:
    """A TCP connection on local port ``port`` is in TIME_WAIT (state 06 of /proc/net/tcp)."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return any(int(row[1].rsplit(":", 1)[1], 16) == port and row[3] == "06" for row in rows)


def test_the_port_probe_does_not_count_connections_still_closing(tmp_path):
    port = free_port()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server's end closes first: it waits in TIME_WAIT on the port
        time.sleep(0.05)
        client.close()
    assert _time_wait_on(port)
    assert port_is_free("127.0.0.1", port)
    started = EmbeddedRedis(tmp_path, port=port).start()  # and a server does start there
    started.stop()


def _read_only(directory: Path) -> list[str]:
    """A command prefix under which ``directory`` is read-only: its mode for
    an ordinary user; for root, whom modes do not stop, a read-only bind
    mount in a mount namespace of its own."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return []
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"']


@pytest.mark.parametrize("where", ["read-only", "under-a-file"])
def test_a_data_directory_it_cannot_write_is_a_clear_error(tmp_path, where):
    data = tmp_path / "data"
    data.mkdir()
    prefix: list[str] = []
    if where == "read-only":
        prefix = _read_only(data)
        prefix += [str(data)] if prefix else []
    else:
        (data / "file").write_text("")
        data = data / "file" / "data"
    # The uploads directory, then (uploads elsewhere) the embedded Redis's.
    for extra in (["-redis", "127.0.0.1:1"], ["--embedded", "--uploads", str(tmp_path / "elsewhere")]):
        run = subprocess.run(
            prefix + SERVE + ["--port", "0", "--data-dir", str(data), *extra],
            capture_output=True,
            text=True,
            timeout=60,
            env=env_without_redis(),
        )
        assert run.returncode == 2, run.stdout + run.stderr
        assert "Traceback" not in run.stderr + run.stdout, run.stderr
        assert f"cannot write to {data}" in run.stderr, run.stderr


def test_open_to_the_network_without_a_token_warns_loudly(redis_server, tmp_path):
    args = ["-redis", redis_server.url, "-workers", "0", "--data-dir", str(tmp_path), "--host", "0.0.0.0"]
    with ServeProcess(args) as serve:
        warnings = [line for line in serve.output().splitlines() if "WARNING" in line]
        assert len(warnings) >= 3 and "WITHOUT A TOKEN" in warnings[0], serve.output()
        port = serve.url.rsplit(":", 1)[1]
        # Reached by address it answers; by a name that is not its own, not.
        assert httpx.get(f"http://127.0.0.1:{port}/config").status_code == 200
        rebound = httpx.get(f"http://127.0.0.1:{port}/stats", headers={"Host": f"attacker.example:{port}"})
        assert rebound.status_code == 421
    env = env_without_redis() | {"FASTIMG_SERVE_TOKEN": "s3cret"}
    with ServeProcess(args, env=env) as quiet:
        assert "WARNING" not in quiet.output()
