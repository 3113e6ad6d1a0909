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
the details and the reasons."""

from __future__ import annotations

import asyncio
import glob
import hmac
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastimg.image.job import safe_job_id
from fastimg.image.outputs import OPERATIONS
from fastimg.producer import IMAGE_TYPES, Producer, detect_image_type, store_upload
from fastimg.queue import keys, status
from fastimg.queue.queue import Queue

log = logging.getLogger("fastimg.serve")

STATIC = Path(__file__).parent / "static"
USER_HEADER = "x-user-id"

# The rule store_upload applies to user ids (tests/test_serve_api.py checks the
# two agree), plus a length bound so an id always fits in a file name.
_USER_ID = re.compile(r"[A-Za-z0-9._ -]{1,64}")
_OUTPUT_NAME = re.compile(r"[^/\\\x00-\x1f\x7f]+_(" + "|".join(map(re.escape, OPERATIONS)) + r")\.webp")


def valid_user_id(user_id: str) -> bool:
    return bool(_USER_ID.fullmatch(user_id)) and user_id not in (".", "..") and user_id == user_id.strip()


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
    max_event_streams: int = 100
    stats_interval: float = 1.0
    closing: threading.Event = field(default_factory=threading.Event)  # set on shutdown: streams end


def error(status_code: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status_code)


class ApiError(HTTPException):
    """An HTTP error with a machine-readable code; rendered as JSON."""

    def __init__(self, status_code: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(status_code=status_code, detail=message)
        self.code = code
        self.extra = extra


_CODES = {
    400: "bad-request",
    401: "unauthorized",
    404: "not-found",
    405: "method-not-allowed",
    408: "request-timeout",
    413: "too-large",
    415: "unsupported-media-type",
    503: "unavailable",
}


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = exc.code if isinstance(exc, ApiError) else _CODES.get(exc.status_code, "error")
    extra = exc.extra if isinstance(exc, ApiError) else {}
    response = error(exc.status_code, code, str(exc.detail), **extra)
    if exc.status_code == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


async def _client_gone(_request: Request, _exc: Exception) -> Response:
    # The client went away mid-body: nothing was stored, and no one reads this.
    return Response(status_code=400)


async def _internal_error(_request: Request, exc: Exception) -> Response:
    log.error("[SERVE] Internal error: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return error(500, "internal-error", "internal server error (logged)")


class BodyLimits:
    """ASGI middleware: a request body larger than ``max_bytes`` gets 413 while it
    streams (nothing past the limit is read); a body that stalls for
    ``read_timeout`` or takes longer than ``body_timeout`` in all gets 408."""

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout: float, body_timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            bad = not length.isdigit()
            response = error(
                400 if bad else 413,
                "bad-request" if bad else "too-large",
                "invalid Content-Length" if bad else f"request body is {int(length)} bytes, limit {self.max_bytes}",
                **({} if bad else {"limit": self.max_bytes}),
            )
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        received = 0
        body_done = False
        deadline = time.monotonic() + self.body_timeout

        async def limited() -> Message:
            nonlocal received, body_done
            if body_done:  # afterwards only http.disconnect comes, whenever it comes
                return await receive()
            wait = min(self.read_timeout, deadline - time.monotonic())
            try:
                message = await asyncio.wait_for(receive(), timeout=max(wait, 0.001))
            except asyncio.TimeoutError:
                raise ApiError(
                    408,
                    "request-timeout",
                    f"request body not received in time (idle limit {self.read_timeout:g}s, "
                    f"total {self.body_timeout:g}s)",
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise ApiError(
                        413, "too-large", f"request body over the limit of {self.max_bytes} bytes", limit=self.max_bytes
                    )
                body_done = not message.get("more_body", False)
            return message

        await self.app(scope, limited, send)


class _StatsCache:
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


class _Owners:
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


def create_app(settings: Settings) -> Starlette:
    root = settings.uploads_root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    owners = _Owners()
    streams = {"open": 0}

    def authorise(request: Request) -> None:
        if not settings.token:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header[:7].lower() == "bearer " else request.query_params.get("access_token", "")
        if not hmac.compare_digest(given.encode(), settings.token.encode()):
            raise ApiError(
                401,
                "unauthorized",
                "a valid bearer token is required "
                "(Authorization: Bearer TOKEN, or ?access_token=TOKEN for EventSource and images)",
            )

    def checked_user(value: str | None, where: str) -> str:
        if value is None or value == "":
            raise ApiError(
                400, "user-id-required", f"give the user id in the userId form field or the {USER_HEADER} header"
            )
        if not valid_user_id(value):
            raise ApiError(
                400,
                "invalid-user-id",
                f"user id {value!r} ({where}) must be 1-64 characters of "
                "letters, digits, '.', '_', '-' and inner spaces, and not '.' or '..'",
            )
        return value

    def file_url(user: str, name: str) -> str:
        return f"/files/{quote(user, safe='')}/processed/{quote(name, safe='')}"

    async def upload(request: Request) -> Response:
        authorise(request)
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise ApiError(415, "not-multipart", "POST /upload takes multipart/form-data with one or more files")
        header_user = request.headers.get(USER_HEADER)
        if header_user is not None:
            checked_user(header_user, USER_HEADER + " header")
        async with request.form(max_files=settings.max_files, max_fields=20, max_part_size=64 * 1024) as form:
            field_user = form.get("userId")
            if field_user is not None and not isinstance(field_user, str):
                raise ApiError(400, "invalid-user-id", "userId must be a text field, not a file")
            if header_user is not None and field_user is not None and field_user != header_user:
                raise ApiError(400, "user-id-mismatch", "the userId field and the X-User-Id header disagree")
            user = checked_user(field_user if field_user is not None else header_user, "userId field")
            files: list[UploadFile] = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
            if not files:
                raise ApiError(400, "no-files", "no file in the request (send one or more file fields)")
            kinds: list[tuple[UploadFile, str]] = []
            refused = []
            for f in files:
                await f.seek(0)
                head = await f.read(4096)
                kind = detect_image_type(head)
                if kind is None:
                    refused.append(f.filename or "(unnamed)")
                else:
                    kinds.append((f, kind))
            if refused:
                raise ApiError(
                    415,
                    "not-an-image",
                    f"not an image: {', '.join(refused)} (accepted: {', '.join(IMAGE_TYPES)}); nothing was stored",
                    refused=refused,
                )
            stored = await run_in_threadpool(_store_all, kinds, root, user)
        producer = request.app.state.producer
        results = []
        queued_all = True
        for (f, kind), (path, size) in zip(kinds, stored, strict=True):
            log.info("[SERVE] Stored %s for user %s (%d bytes)", path.name, user, size)
            job = await run_in_threadpool(producer.enqueue, path, user, root)
            job_id = path.stem
            owners.add(job_id, user)
            queued_all &= job is not None
            results.append(
                {
                    "name": f.filename,
                    "storedAs": path.name,
                    "jobId": job_id,
                    "type": kind,
                    "bytes": size,
                    "queued": job is not None,
                    "outputs": {op: file_url(user, f"{job_id}_{op}.webp") for op in OPERATIONS},
                }
            )
            if job is None:
                log.warning("[SERVE] %s not queued: Redis unavailable", path.name)
        body: dict[str, Any] = {"userId": user, "files": results, "queued": queued_all}
        if not queued_all:
            body["warning"] = (
                "stored, but Redis was not reachable: not queued (gpu-image-worker submit can queue them later)"
            )
        return JSONResponse(body, status_code=201)

    async def job(request: Request) -> Response:
        authorise(request)
        job_id = request.path_params["job_id"]
        if not safe_job_id(job_id):
            raise ApiError(
                400, "invalid-job-id", "job id must be at most 200 bytes, without separators or control characters"
            )
        try:
            state = await run_in_threadpool(status.read, request.app.state.conn, job_id)
        except redis.RedisError as e:
            raise ApiError(503, "redis-unavailable", f"Redis is not reachable: {e}") from None
        if not state:
            raise ApiError(404, "unknown-job", f"no status for job {job_id!r} (unknown, or expired after 7 days)")
        return JSONResponse(state)

    async def stats(request: Request) -> Response:
        authorise(request)
        value = await request.app.state.stats.get()
        return JSONResponse(value, status_code=200 if value.get("redis") else 503)

    def belongs(job_id: str, user: str) -> bool:
        owner = owners.map.get(job_id)
        if owner is not None:
            return owner == user
        # Queued by another producer: its upload lies in the user's directory.
        base = os.path.join(glob.escape(str(root / user)), glob.escape(job_id))
        return os.path.isfile(base) or bool(glob.glob(base + ".*"))

    async def events(request: Request) -> Response:
        authorise(request)
        user = request.query_params.get("user")
        if user is not None:
            checked_user(user, "user parameter")
        if streams["open"] >= settings.max_event_streams:
            raise ApiError(
                503, "too-many-streams", f"{settings.max_event_streams} event streams are open; try again later"
            )
        return StreamingResponse(
            _event_stream(request, user),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _event_stream(request: Request, user: str | None) -> AsyncIterator[str]:
        mine: OrderedDict[str, bool] = OrderedDict()
        pubsub = None
        lost = False  # the subscription broke: events may have been missed
        last_stats: dict[str, Any] | None = None
        last_sent = time.monotonic()
        streams["open"] += 1
        try:
            yield "retry: 2000\n: fastimg events\n\n"
            while not settings.closing.is_set():
                if pubsub is None:
                    try:
                        pubsub = request.app.state.aconn.pubsub(ignore_subscribe_messages=True)
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
                    send = True
                    if user is not None:
                        try:
                            job_id = str(json.loads(data).get("jobId", ""))
                        except (ValueError, AttributeError):
                            job_id = ""
                        if job_id not in mine:
                            mine[job_id] = safe_job_id(job_id) and belongs(job_id, user)
                            if len(mine) > 1000:
                                mine.popitem(last=False)
                        send = mine[job_id]
                    if send:
                        last_sent = time.monotonic()
                        yield f"event: status\ndata: {data}\n\n"
                current = await request.app.state.stats.get()
                if current != last_stats:
                    last_stats = current
                    last_sent = time.monotonic()
                    yield f"event: stats\ndata: {json.dumps(current, separators=(',', ':'))}\n\n"
                elif time.monotonic() - last_sent > 15:
                    last_sent = time.monotonic()
                    yield ": keep-alive\n\n"  # proxies drop silent connections
        finally:
            streams["open"] -= 1
            await _close(pubsub)

    async def processed_file(request: Request) -> Response:
        authorise(request)
        user, name = request.path_params["user"], request.path_params["name"]
        if not valid_user_id(user) or not _OUTPUT_NAME.fullmatch(name) or name.startswith("."):
            raise ApiError(404, "not-found", "no such output")
        path = root / user / "processed" / name
        real = os.path.realpath(path)
        # Symlinks resolved: nothing outside the uploads root is ever served.
        if os.path.commonpath([real, str(root)]) != str(root) or not os.path.isfile(real):
            raise ApiError(404, "not-found", "no such output (yet)")
        return FileResponse(
            real, media_type="image/webp", headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
        )

    async def config(_request: Request) -> Response:
        return JSONResponse(
            {
                "auth": bool(settings.token),
                "maxUploadBytes": settings.max_body_bytes,
                "maxFiles": settings.max_files,
                "imageTypes": list(IMAGE_TYPES),
                "operations": list(OPERATIONS),
            }
        )

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def index(_request: Request) -> Response:
        return FileResponse(
            STATIC / "index.html", media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"}
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        conn = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        aconn = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=2)
        app.state.conn = conn
        app.state.aconn = aconn
        app.state.producer = Producer(conn)
        app.state.stats = _StatsCache(conn, settings.stats_interval)
        try:
            yield
        finally:
            settings.closing.set()
            await aconn.aclose()
            conn.close()

    middleware = [
        Middleware(
            BodyLimits,
            max_bytes=settings.max_body_bytes,
            read_timeout=settings.read_timeout,
            body_timeout=settings.body_timeout,
        )
    ]
    if settings.cors_origins:
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "X-User-Id"],
            ),
        )
    routes = [
        Route("/", index),
        Route("/upload", upload, methods=["POST"]),
        Route("/jobs/{job_id}", job),
        Route("/events", events),
        Route("/stats", stats),
        Route("/files/{user}/processed/{name}", processed_file),
        Route("/config", config),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, ClientDisconnect: _client_gone, Exception: _internal_error},
    )


async def _close(pubsub: Any) -> None:
    if pubsub is not None:
        try:
            await pubsub.aclose()
        except (redis.RedisError, OSError):
            pass


def _store_all(kinds: list[tuple[UploadFile, str]], root: Path, user: str) -> list[tuple[Path, int]]:
    """Store every file or none: a failure part-way removes what was stored."""
    stored: list[tuple[Path, int]] = []
    try:
        for f, _kind in kinds:
            f.file.seek(0)
            path = store_upload(f.file, root, user, f.filename or "upload")
            stored.append((path, path.stat().st_size))
    except BaseException:
        for path, _ in stored:
            path.unlink(missing_ok=True)
        raise
    return stored
