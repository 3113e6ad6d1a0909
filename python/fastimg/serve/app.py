"""The upload server: the seed's server side over HTTP, and the live page.

    POST /upload                     multipart, one or more files; user id in the
                                     ``userId`` field or the ``X-User-Id`` header
    GET  /jobs/<jobId>               the job's status hash
    GET  /events[?user=ID]           image:events as Server-Sent Events, plus queue stats
    GET  /stats                      queue lengths, jobs in flight, live workers
    GET  /files/<user>/processed/<name>.webp   outputs, read-only
    GET  /config, /healthz           what the page needs to know; liveness
    GET  /                           the page (static/, no build step)

Every error is JSON: ``{"error": CODE, "message": TEXT}``. docs/serve.md has
the details and the reasons. Each handler lives with its concern (uploads.py,
events.py, files.py; access.py, errors.py, limits.py) and reads what the
handlers share from ``app.state.serve`` (state.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fastimg.image.job import safe_job_id
from fastimg.image.spec import OPERATIONS
from fastimg.producer import IMAGE_TYPES, Producer
from fastimg.queue import status
from fastimg.queue.address import parse
from fastimg.queue.connect import async_client, client

from .access import authorise
from .errors import EXCEPTION_HANDLERS, ApiError
from .events import events
from .files import STATIC, favicon, index, processed_file
from .guard import Guard, allowed_hosts
from .limits import BodyLimits
from .listing import uploads
from .state import ServeState, Settings, StatsCache, served
from .uploads import upload


async def job(request: Request) -> Response:
    authorise(request)
    job_id = request.path_params["job_id"]
    if not safe_job_id(job_id):
        raise ApiError(
            400, "invalid-job-id", "job id must be at most 200 bytes, without separators or control characters"
        )
    try:
        state = await run_in_threadpool(status.read, served(request).conn, job_id)
    except redis.RedisError as e:
        raise ApiError(503, "redis-unavailable", f"Redis is not reachable: {e}") from None
    if not state:
        raise ApiError(404, "unknown-job", f"no status for job {job_id!r} (unknown, or expired after 7 days)")
    return JSONResponse(state)


async def stats(request: Request) -> Response:
    authorise(request)
    value = await served(request).stats.get()
    return JSONResponse(value, status_code=200 if value.get("redis") else 503)


async def config(request: Request) -> Response:
    settings = served(request).settings
    return JSONResponse(
        {
            "auth": bool(settings.token),
            "maxUploadBytes": settings.max_body_bytes,
            "maxFiles": settings.max_files,
            "imageTypes": list(IMAGE_TYPES),
            "operations": list(OPERATIONS),
        }
    )


async def healthz(request: Request) -> Response:
    """200 when uploads are stored and queued; 503 while Redis does not answer
    (uploads are then stored, not queued)."""
    state = served(request)
    body: dict[str, Any] = {"ok": True, "redis": True}
    try:
        await asyncio.wait_for(state.aconn.ping(), 2.0)
    except (redis.RedisError, OSError, asyncio.TimeoutError) as e:
        body = {"ok": False, "redis": False, "error": f"Redis is not reachable: {e or 'no answer in 2 s'}"}
    if state.settings.embedded is not None:
        body["embedded"] = state.settings.embedded()
    return JSONResponse(body, status_code=200 if body["ok"] else 503)


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    state: ServeState = app.state.serve
    url = state.settings.redis_url
    state.conn = client(url, socket_timeout=5, socket_connect_timeout=2)
    state.aconn = async_client(url, socket_connect_timeout=2)
    state.producer = Producer(state.conn, parse(url).acks)
    state.stats = StatsCache(state.conn, state.settings.stats_interval)
    try:
        yield
    finally:
        state.settings.closing.set()
        await state.aconn.aclose()
        state.conn.close()


ROUTES = [
    Route("/", index),
    Route("/favicon.ico", favicon),
    Route("/upload", upload, methods=["POST"]),
    Route("/uploads", uploads),
    Route("/jobs/{job_id}", job),
    Route("/events", events),
    Route("/stats", stats),
    Route("/files/{user}/processed/{name}", processed_file),
    Route("/config", config),
    Route("/healthz", healthz),
    Mount("/static", StaticFiles(directory=STATIC)),
]


def create_app(settings: Settings) -> Starlette:
    state = ServeState(settings)
    state.root.mkdir(parents=True, exist_ok=True)
    middleware = [
        Middleware(Guard, hosts=allowed_hosts(settings.host, settings.allowed_hosts), origins=settings.cors_origins),
        Middleware(
            BodyLimits,
            max_bytes=settings.max_body_bytes,
            read_timeout=settings.read_timeout,
            body_timeout=settings.body_timeout,
        ),
    ]
    if settings.cors_origins:
        middleware.insert(
            1,
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "X-User-Id"],
            ),
        )
    app = Starlette(routes=ROUTES, middleware=middleware, lifespan=_lifespan, exception_handlers=EXCEPTION_HANDLERS)
    app.state.serve = state
    return app
