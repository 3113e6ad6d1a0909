"""GET /events: the queue's status messages (image:events) and its stats as
Server-Sent Events, optionally only the jobs of one user."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import redis
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from fastimg.image.job import safe_job_id
from fastimg.queue import keys

from .access import authorise, checked_user
from .errors import ApiError
from .state import ServeState, served


async def events(request: Request) -> Response:
    authorise(request)
    state = served(request)
    user = request.query_params.get("user")
    if user is not None:
        checked_user(user, "user parameter")
    limit = state.settings.max_event_streams
    if state.open_streams >= limit:
        raise ApiError(503, "too-many-streams", f"{limit} event streams are open; try again later")
    return _EventStream(state, user)


class _EventStream(StreamingResponse):
    """Holds one of the ``max_event_streams`` places from the moment it is
    granted: counted when the stream's generator first ran, streams asked for
    at once all passed the check before any was counted."""

    def __init__(self, state: ServeState, user: str | None) -> None:
        super().__init__(
            _stream(state, user),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.state = state
        state.open_streams += 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.state.open_streams -= 1


def _belongs(state: ServeState, job_id: str, user: str) -> bool:
    owner = state.owners.map.get(job_id)
    if owner is not None:
        return owner == user
    # Queued by another producer: its upload lies in the user's directory.
    base = os.path.join(glob.escape(str(state.root / user)), glob.escape(job_id))
    return os.path.isfile(base) or bool(glob.glob(base + ".*"))


class _Filter:
    """Which status messages one user's stream shows: those of their own
    jobs (the last 1,000 decisions remembered)."""

    def __init__(self, state: ServeState, user: str | None) -> None:
        self.state, self.user = state, user
        self.mine: OrderedDict[str, bool] = OrderedDict()

    def shows(self, data: str) -> bool:
        if self.user is None:
            return True
        try:
            job_id = str(json.loads(data).get("jobId", ""))
        except (ValueError, AttributeError):
            job_id = ""
        if job_id not in self.mine:
            self.mine[job_id] = safe_job_id(job_id) and _belongs(self.state, job_id, self.user)
            if len(self.mine) > 1000:
                self.mine.popitem(last=False)
        return self.mine[job_id]


async def _stream(state: ServeState, user: str | None) -> AsyncIterator[str]:
    settings = state.settings
    shown = _Filter(state, user)
    pubsub = None
    lost = False  # the subscription broke: events may have been missed
    last_stats: dict[str, Any] | None = None
    last_sent = time.monotonic()
    try:
        yield "retry: 2000\n: fastimg events\n\n"
        while not settings.closing.is_set():
            if pubsub is None:
                try:
                    pubsub = state.aconn.pubsub(ignore_subscribe_messages=True)
                    await pubsub.subscribe(keys.EVENTS)
                    if lost:
                        # Pub/sub keeps no history: tell the page to re-read
                        # the status of the jobs it follows.
                        lost = False
                        yield "event: resync\ndata: {}\n\n"
                except redis.RedisError:
                    await _close(pubsub)
                    pubsub = None
                    lost = True
            message = None
            if pubsub is not None:
                try:
                    message = await pubsub.get_message(timeout=settings.stats_interval)
                except redis.RedisError:
                    await _close(pubsub)
                    pubsub = None
                    lost = True
            else:
                await asyncio.sleep(settings.stats_interval)
            if message is not None and message.get("type") == "message":
                data = message["data"].decode("utf-8", "replace")
                if shown.shows(data):
                    last_sent = time.monotonic()
                    yield f"event: status\ndata: {data}\n\n"
            current = await state.stats.get()
            if current != last_stats:
                last_stats = current
                last_sent = time.monotonic()
                yield f"event: stats\ndata: {json.dumps(current, separators=(',', ':'))}\n\n"
            elif time.monotonic() - last_sent > 15:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"  # proxies drop silent connections
    finally:
        await _close(pubsub)


async def _close(pubsub: Any) -> None:
    if pubsub is not None:
        try:
            await pubsub.aclose()
        except (redis.RedisError, OSError):
            pass
