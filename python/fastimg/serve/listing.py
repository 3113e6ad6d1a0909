"""GET /uploads?user=ID: a user's uploads, newest first, a page at a time,
each with its job's status, so that the page shows them again after a reload."""

from __future__ import annotations

import heapq
import os
import re
import stat
from pathlib import Path
from typing import Any

import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fastimg.image.job import safe_job_id
from fastimg.image.spec import OPERATIONS
from fastimg.producer import build_job
from fastimg.queue import status

from .access import authorise, checked_user
from .errors import ApiError
from .files import archive_url, file_url
from .state import served

PAGE = 20
MAX_PAGE = 100
# The names uploads are stored under (store_upload, the seed): <uuid>-<client's name>.
_STORED = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-.+")
_CURSOR = re.compile(r"(\d{1,20}):(.+)")


async def uploads(request: Request) -> Response:
    authorise(request)
    state = served(request)
    user = checked_user(request.query_params.get("user"), "user parameter")
    try:
        limit = int(request.query_params.get("limit", PAGE))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, "bad-request", f"limit must be 1-{MAX_PAGE}")
    before = _cursor(request.query_params.get("before"))
    page, more = await run_in_threadpool(_newest, state.root / user, limit, before)
    job_ids = [str(build_job(state.root / user / name, user, state.root)["jobId"]) for _, name, _ in page]
    try:
        states = await run_in_threadpool(_states, state.conn, job_ids)
    except redis.RedisError:
        states = [None] * len(page)  # listed all the same; the states come with the events
    items = [
        {
            "name": name[37:],
            "storedAs": name,
            "jobId": job_id,
            "bytes": size,
            "uploadedAt": mtime_ns // 1_000_000,
            "status": job_state,
            "outputs": {op: file_url(user, f"{job_id}_{op}.webp") for op in OPERATIONS},
            "archive": archive_url(user, job_id),
        }
        for (mtime_ns, name, size), job_id, job_state in zip(page, job_ids, states, strict=True)
    ]
    cursor = f"{page[-1][0]}:{page[-1][1]}" if more else None
    return JSONResponse({"userId": user, "uploads": items, "next": cursor})


def _cursor(value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    m = _CURSOR.fullmatch(value)
    if not m:
        raise ApiError(400, "bad-request", "before must be the 'next' value of the previous page")
    return int(m.group(1)), m.group(2)


def _newest(directory: Path, limit: int, before: tuple[int, str] | None) -> tuple[list[tuple[int, str, int]], bool]:
    """Up to ``limit`` uploads older than ``before`` (mtime in ns, name), newest
    first, and whether there are more: one pass over the directory, holding
    no more than a page."""
    try:
        entries = os.scandir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return [], False
    heap: list[tuple[int, str, int]] = []  # the newest limit + 1 so far, oldest on top
    with entries:
        for entry in entries:
            if not _STORED.fullmatch(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            item = (info.st_mtime_ns, entry.name, info.st_size)
            if not stat.S_ISREG(info.st_mode) or (before is not None and item[:2] >= before):
                continue
            if len(heap) <= limit:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
    page = sorted(heap, reverse=True)
    return page[:limit], len(page) > limit


def _states(conn: redis.Redis, job_ids: list[str]) -> list[dict[str, Any] | None]:
    return [status.read(conn, job_id) or None if safe_job_id(job_id) else None for job_id in job_ids]
