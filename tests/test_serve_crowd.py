"""`gpu-image-worker serve` under a crowd: one client address holding
hundreds of connections must leave the others served, and a burst of event
streams must stop at the documented limit. Other client addresses are other
loopback addresses (127.0.0.0/8 is all loopback on Linux)."""

from __future__ import annotations

import contextlib
import resource
import socket
import statistics
import threading
import time

import httpx
import pytest
from conftest import DATA
from test_serve_process import ServeProcess

PHOTO = DATA / "rocket.jpg"


@pytest.fixture(scope="module", autouse=True)
def enough_descriptors():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _address(url: str) -> tuple[str, int]:
    host, port = url[len("http://") :].split(":")
    return host, int(port)


def _open(server: tuple[str, int], source: str, count: int, first_bytes: bytes) -> list[socket.socket]:
    """``count`` connections from ``source``, each having sent ``first_bytes``
    and then nothing: a request that never completes."""
    held = []
    for _ in range(count):
        s = socket.create_connection(server, timeout=5, source_address=(source, 0))
        with contextlib.suppress(OSError):  # refused at once: the server may close it before this
            s.sendall(first_bytes)
        held.append(s)
    return held


class Crowd:
    """``count`` connections from ``source`` that never finish their request;
    each one the server closes is opened again, for as long as the crowd lasts."""

    def __init__(self, server: tuple[str, int], source: str, count: int, first_bytes: bytes) -> None:
        self.args = (server, source, 1, first_bytes)
        self.held = _open(server, source, count, first_bytes)
        self.reopened = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._keep, daemon=True)
        self.thread.start()

    def _keep(self) -> None:
        while not self.done.wait(0.2):
            for i, s in enumerate(self.held):
                s.setblocking(False)
                try:
                    closed = s.recv(4096) is not None  # an answer (503) or the end: closed by the server
                except BlockingIOError:
                    closed = False
                except OSError:
                    closed = True
                if closed:
                    s.close()
                    with contextlib.suppress(OSError):
                        self.held[i] = _open(*self.args)[0]
                        self.reopened += 1

    def __enter__(self) -> Crowd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(10)
        for s in self.held:
            s.close()


def _uploads_from(url: str, source: str, count: int) -> tuple[list[int], list[float]]:
    """The status of each of ``count`` uploads from ``source``, and the seconds each took."""
    statuses, took = [], []
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=30) as client:
        for i in range(count):
            started = time.monotonic()
            with open(PHOTO, "rb") as f:
                res = client.post(url + "/upload", data={"userId": "u1"}, files={"file": (f"{i}.jpg", f)})
            took.append(time.monotonic() - started)
            statuses.append(res.status_code)
    return statuses, took


@pytest.mark.parametrize(
    "attack, count",
    [
        ("trickling headers", 1000),  # a request line, then headers that never end
        ("slow bodies", 400),  # whole headers, then a body that never comes
    ],
)
def test_one_client_address_cannot_take_the_server(redis_server, tmp_path, attack, count):
    args = ["-redis", redis_server.url, "-workers", "0", "--data-dir", str(tmp_path)]
    with ServeProcess(args) as serve:
        server = _address(serve.url)
        first = (
            b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a"
            if attack == "trickling headers"
            else b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nX-User-Id: u1\r\n"
            b"Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: 1000000\r\n\r\n--XX\r\n"
        )
        with Crowd(server, "127.0.0.2", count, first) as crowd:
            statuses, took = _uploads_from(serve.url, "127.0.0.3", 40)
        print(
            f"{attack}, {count} connections from one address ({crowd.reopened} reopened): {statuses.count(201)} "
            f"of 40 uploads from another answered 201, median {statistics.median(took) * 1000:.0f} ms"
        )
        assert statuses == [201] * 40, f"{attack}: {statuses.count(503)} of 40 uploads refused with 503"
        assert "[SERVE] 127.0.0.2 holds 64 connections: refusing more from it" in serve.output()


def test_a_burst_of_event_streams_stops_at_the_limit(redis_server, tmp_path):
    args = ["-redis", redis_server.url, "-workers", "0", "--data-dir", str(tmp_path)]
    with ServeProcess(args) as serve:
        server = _address(serve.url)
        request = b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        # Four addresses, so that the per-address bound does not decide.
        conns = [s for i in range(4) for s in _open(server, f"127.0.0.{10 + i}", 31, b"")]
        try:
            barrier = threading.Barrier(len(conns))
            answers: list[bytes] = [b""] * len(conns)

            def ask(i: int) -> None:
                barrier.wait()
                conns[i].sendall(request)
                with contextlib.suppress(OSError):
                    answers[i] = conns[i].recv(64)

            threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(conns))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            accepted = sum(a.startswith(b"HTTP/1.1 200") for a in answers)
            refused = sum(a.startswith(b"HTTP/1.1 503") for a in answers)
            assert (accepted, refused) == (100, 24), (accepted, refused)
        finally:
            for s in conns:
                s.close()
