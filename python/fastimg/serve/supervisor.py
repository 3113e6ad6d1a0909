"""Keeps the embedded Redis running while `serve` runs: a server that exits
on its own (killed, crashed, out of memory) is started again on the same port
from the same AOF, after a pause that grows while restarts fail, and each step
is logged. Uploads meanwhile are stored but not queued, and /healthz says so."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from ..queue.connect import Backoff
from .embedded import EmbeddedRedis, EmbeddedRedisError


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def supervise(server: EmbeddedRedis, say: Callable[[str], None]) -> Supervisor:
    """Start ``server`` and keep it running until ``stop``. Raises EmbeddedRedisError
    when it does not start."""
    server.start()
    say(
        f"[REDIS] Embedded {server.name} {server.version} on {server.address} (AOF in {server.data_dir}); "
        f"other producers and workers: -redis {server.address}"
    )
    supervisor = Supervisor(server, say)
    supervisor.thread.start()
    return supervisor


class Supervisor:
    """Watches a started ``server`` from a thread of its own (``thread``)."""

    def __init__(self, server: EmbeddedRedis, say: Callable[[str], None], stable_after: float = 60.0) -> None:
        self.server = server
        self.say = say
        self.stable_after = stable_after  # up this long: the next restart starts from the shortest pause
        self.stopping = threading.Event()
        self._lock = threading.Lock()  # a restart and stop() exclude each other
        self.restarts = 0
        self.down_since: float | None = None
        self.last_exit = ""
        self.thread = threading.Thread(target=self._watch, name="REDIS", daemon=True)

    def status(self) -> dict[str, Any]:
        """For /healthz: whether the server is up, and what happened to it."""
        value: dict[str, Any] = {"running": self.down_since is None, "restarts": self.restarts}
        if self.last_exit:
            value["lastExit"] = self.last_exit
        if self.down_since is not None:
            value["downForSeconds"] = round(time.monotonic() - self.down_since, 1)
        return value

    def _watch(self) -> None:
        # The processes this thread starts get SIGKILL when it ends (the
        # parent-death signal follows the thread): it ends only once the
        # server it started has exited.
        backoff = Backoff()
        while True:
            proc = self.server.proc
            if proc is None:
                return
            up_since = time.monotonic()
            code = proc.wait()
            if self.stopping.is_set():
                return
            if time.monotonic() - up_since > self.stable_after:
                backoff.reset()
            self.down_since = time.monotonic()
            self.last_exit = _exit_reason(code)
            self.say(
                f"[REDIS] Embedded {self.server.name} on {self.server.address} {self.last_exit}; "
                f"restarting it (its log: {self.server.log_tail()})"
            )
            if not self._restart(backoff):
                return

    def _restart(self, backoff: Backoff) -> bool:
        """Start the server again until it answers; False when stopped first."""
        while True:
            delay = backoff.next()
            if self.stopping.wait(delay):
                return False
            with self._lock:
                if self.stopping.is_set():
                    return False
                try:
                    self.server.launch()
                except EmbeddedRedisError as e:
                    self.say(f"[REDIS] Restart failed: {e}; trying again")
                    continue
            assert self.down_since is not None
            down = time.monotonic() - self.down_since
            self.restarts += 1
            self.down_since = None
            self.say(
                f"[REDIS] Embedded {self.server.name} {self.server.version} restarted on {self.server.address} "
                f"after {down:.1f}s down (AOF replayed: {self._keys()} keys)"
            )
            return True

    def _keys(self) -> str:
        client = redis.Redis(host=self.server.host, port=self.server.port, socket_timeout=2)
        try:
            return str(sum(int(db.get("keys", 0)) for db in client.info("keyspace").values()))
        except (redis.RedisError, AttributeError, ValueError):
            return "?"
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server for good: no restart after this, a restart under way finishes first."""
        self.stopping.set()
        with self._lock:
            self.server.stop()
        self.thread.join(5)
        self.say(f"[REDIS] Embedded {self.server.name} stopped")
