"""What the upload server's handlers share: its settings, and the state it
keeps while it runs (``app.state.serve``)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from fastimg.producer import Producer
from fastimg.queue.lists import Queue


@dataclass
class Settings:
    uploads_root: Path
    redis_url: str
    token: str | None = None  # bearer token for uploads, status, events and files
    max_body_bytes: int = 64 * 1024 * 1024
    max_files: int = 20
    read_timeout: float = 20.0  # longest wait for the next piece of a request body
    body_timeout: float = 300.0  # longest time to receive a whole request body
    cors_origins: Sequence[str] = ()
    host: str = "127.0.0.1"  # the address serve listens on: the Host names it answers follow (guard.py)
    allowed_hosts: Sequence[str] = ()  # more Host names to answer ("*": any)
    max_event_streams: int = 100
    stats_interval: float = 1.0
    closing: threading.Event = field(default_factory=threading.Event)  # set on shutdown: streams end
    embedded: Callable[[], dict[str, Any]] | None = None  # the embedded Redis's state, for /healthz


class StatsCache:
    """One stats query per interval, however many pages are open."""

    def __init__(self, conn: redis.Redis, interval: float) -> None:
        self.conn = conn
        self.interval = interval
        self.value: dict[str, Any] = {}
        self.at = 0.0
        self.lock = asyncio.Lock()

    async def get(self) -> dict[str, Any]:
        async with self.lock:
            if time.monotonic() - self.at >= self.interval:
                try:
                    stats = await run_in_threadpool(Queue(self.conn).stats)
                    self.value = {"redis": True, **stats}
                except redis.RedisError as e:
                    self.value = {"redis": False, "error": str(e)}
                self.at = time.monotonic()
            return self.value


class Owners:
    """jobId -> user of the jobs this server queued (bounded), so /events?user=
    needs no disk lookup for them."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self.map: OrderedDict[str, str] = OrderedDict()

    def add(self, job_id: str, user: str) -> None:
        self.map[job_id] = user
        self.map.move_to_end(job_id)
        while len(self.map) > self.size:
            self.map.popitem(last=False)


class ServeState:
    """Shared by the handlers. The Redis clients, the producer and the stats
    cache exist while the app runs: its lifespan makes and closes them."""

    conn: redis.Redis
    aconn: aioredis.Redis
    producer: Producer
    stats: StatsCache

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.uploads_root.resolve()
        self.owners = Owners()
        self.open_streams = 0


def served(request: Request) -> ServeState:
    """The state of the app that received ``request``."""
    state: ServeState = request.app.state.serve
    return state
