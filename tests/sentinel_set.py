"""A primary, its replicas and three Sentinels on loopback (the same
redis-server binary, in --sentinel mode), and a producer queueing uploads
through them, for the failover tests and bench/failover.py. Every wait polls
the servers' own state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import redis
from redis_server import RedisServer, free_port, wait_for

from fastimg.producer import Producer, store_upload

SERVICE = "fastimg"
DATA_PASSWORD = "data-secret"
SENTINEL_PASSWORD = "sentinel-secret"


class Sentinel:
    """One Sentinel process with its own config file (Sentinel rewrites it)."""

    def __init__(self, primary_port: int, down_after_ms: int, failover_timeout_ms: int) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="fastimg-sentinel-")
        self.conf = Path(self.dir) / "sentinel.conf"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.dir}\n"
            f"requirepass {SENTINEL_PASSWORD}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
            f"sentinel auth-pass {SERVICE} {DATA_PASSWORD}\n"
            f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.proc = subprocess.Popen(
            ["redis-server", str(self.conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.client = redis.Redis(
            host="127.0.0.1", port=self.port, password=SENTINEL_PASSWORD, socket_timeout=2, decode_responses=True
        )
        wait_for(self._answers, timeout=10, what=f"sentinel on {self.port}")

    def _answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def master(self) -> dict:
        return self.client.execute_command("SENTINEL", "MASTER", SERVICE)

    def primary_port(self) -> int | None:
        try:
            addr = self.client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        except redis.RedisError:
            return None
        return int(addr[1]) if addr else None

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.resume()
        self.proc.terminate()
        self.proc.wait(10)
        self.client.close()


class SentinelSet:
    """The topology: ``nodes`` by port (the primary first), three Sentinels.
    Data nodes and Sentinels have different passwords, as in production."""

    def __init__(
        self,
        replicas: int = 1,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 4000,
        link: Callable[[int], int] = lambda port: port,
    ) -> None:
        """``link`` gives the port a replica reaches the primary's ``port`` by
        (another, for a proxy that can cut the link)."""
        # No delay before a full sync: Redis waits 5 s by default for more
        # replicas to share it.
        auth = ["--requirepass", DATA_PASSWORD, "--masterauth", DATA_PASSWORD, "--repl-diskless-sync-delay", "0"]
        primary = RedisServer(auth)
        self.nodes = {primary.port: primary}
        self.replicas = replicas
        self.sentinels: list[Sentinel] = []
        try:
            for _ in range(replicas):
                replica = RedisServer(auth + ["--replicaof", "127.0.0.1", str(link(primary.port))])
                self.nodes[replica.port] = replica
            self.sentinels = [Sentinel(primary.port, down_after_ms, failover_timeout_ms) for _ in range(3)]
            wait_for(self.settled, timeout=30, what="sentinels seeing each other and the replicas")
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        """The URL a process reads REDIS_SENTINEL_PASSWORD with (:attr:`env`)."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://:{DATA_PASSWORD}@{hosts}/{SERVICE}"

    @property
    def env(self) -> dict[str, str]:
        return {"REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD}

    def full_url(self, **params: object) -> str:
        """The URL with the Sentinels' password in it, for this process, and ``params``."""
        query = "&".join(f"{k}={v}" for k, v in {"sentinel_password": SENTINEL_PASSWORD, **params}.items())
        return f"{self.url}?{query}"

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, password=DATA_PASSWORD, socket_timeout=5)

    def primary_port(self) -> int | None:
        """The primary every Sentinel that answers names (None while they disagree)."""
        seen = {s.primary_port() for s in self.sentinels}
        return seen.pop() if len(seen) == 1 else None

    def primary(self) -> redis.Redis:
        port = wait_for(self.primary_port, timeout=30, what="sentinels agreeing on a primary")
        return self.node(port)

    def role(self, port: int) -> str | None:
        try:
            return self.node(port).execute_command("ROLE")[0].decode()
        except redis.RedisError:
            return None

    def settled(self) -> bool:
        """Every Sentinel knows the two others and the replicas, and the
        replicas are in sync with the primary."""
        try:
            for s in self.sentinels:
                state = s.master()
                if int(state["num-other-sentinels"]) != 2 or int(state["num-slaves"]) < self.replicas:
                    return False
            primary = self.primary_port()
            return primary is not None and all(
                self.node(port).info("replication").get("master_link_status") == "up"
                for port in self.nodes
                if port != primary
            )
        except (redis.RedisError, KeyError):
            return False

    def kill(self, port: int) -> None:
        server = self.nodes[port]
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()

    def restart(self, port: int) -> None:
        """Start a killed node again, as it was configured at first (empty:
        the tests keep no files), which Sentinel then turns into a replica."""
        self.nodes[port].start()

    def close(self) -> None:
        for s in self.sentinels:
            s.close()
        for server in self.nodes.values():
            server.close()
        for s in self.sentinels:
            for f in Path(s.dir).iterdir():
                f.unlink()
            os.rmdir(s.dir)


class Flow:
    """A producer queueing one upload every ``every`` seconds until stopped,
    through ``Producer.from_url``; remembers which jobs it was told were
    queued (confirmed) and which not."""

    def __init__(self, url: str, uploads: Path, photo: bytes, every: float = 0.02) -> None:
        self.producer = Producer.from_url(url)
        self.uploads, self.photo, self.every = uploads, photo, every
        self.confirmed: list[str] = []
        self.unconfirmed: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            path = store_upload(self.photo, self.uploads, "user1", "p.jpg")
            job = self.producer.enqueue(path, "user1", self.uploads, ["thumbnail"])
            (self.confirmed if job else self.unconfirmed).append(path.stem)
            self.stop.wait(self.every)

    def end(self, primary: redis.Redis | None = None) -> None:
        """Stop; with ``primary``, wait until every confirmed job has an outcome there."""
        self.stop.set()
        self.thread.join(30)
        if primary is None:
            return
        wait_for(lambda: all(outcomes(primary)[j] for j in self.confirmed), timeout=60, what="confirmed jobs done")
        time.sleep(0.5)  # anything recorded twice would show up now


def outcomes(conn: redis.Redis) -> Counter:
    """How many records each jobId has on image:done and image:failed."""
    return Counter(json.loads(r)["jobId"] for key in ("image:done", "image:failed") for r in conn.lrange(key, 0, -1))
