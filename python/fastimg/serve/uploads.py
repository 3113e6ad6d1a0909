"""POST /upload: store every file of a request, or none, and queue a job
for each, as the seed's server does."""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import redis
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fastimg.image.spec import OPERATIONS
from fastimg.producer import IMAGE_TYPES, build_job, detect_image_type, store_upload

from .access import USER_HEADER, authorise, checked_user
from .errors import ApiError
from .files import archive_url, file_url
from .state import served

log = logging.getLogger("fastimg.serve")


async def upload(request: Request) -> Response:
    authorise(request)
    state = served(request)
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(415, "not-multipart", "POST /upload takes multipart/form-data with one or more files")
    header_user = request.headers.get(USER_HEADER)
    if header_user is not None:
        checked_user(header_user, USER_HEADER + " header")
    async with request.form(max_files=state.settings.max_files, max_fields=20, max_part_size=64 * 1024) as form:
        field_user = form.get("userId")
        if field_user is not None and not isinstance(field_user, str):
            raise ApiError(400, "invalid-user-id", "userId must be a text field, not a file")
        if header_user is not None and field_user is not None and field_user != header_user:
            raise ApiError(400, "user-id-mismatch", "the userId field and the X-User-Id header disagree")
        user = checked_user(field_user if field_user is not None else header_user, "userId field")
        kinds = await _images(form)
        stored = await run_in_threadpool(_store_all, kinds, state.root, user)
    results = []
    problem: tuple[str, str] | None = None
    for (f, kind), (path, size) in zip(kinds, stored, strict=True):
        log.info("[SERVE] Stored %s for user %s (%d bytes)", path.name, user, size)
        job = build_job(path, user, state.root)
        job_id = str(job["jobId"])  # the producer's rule, whatever the name ends with
        try:
            await run_in_threadpool(state.producer.push, job)
            log.info("[SERVE] Queued job %s (%s)", job_id, kind)
        except redis.RedisError as e:
            problem = _queue_problem(e)
            log.warning("[SERVE] %s not queued: %s", path.name, problem[1])
        state.owners.add(job_id, user)
        results.append(
            {
                "name": f.filename,
                "storedAs": path.name,
                "jobId": job_id,
                "type": kind,
                "bytes": size,
                "queued": problem is None,
                "outputs": {op: file_url(user, f"{job_id}_{op}.webp") for op in OPERATIONS},
                "archive": archive_url(user, job_id),
            }
        )
    body: dict[str, Any] = {"userId": user, "files": results, "queued": problem is None}
    if problem is not None:
        body["queueError"], reason = problem
        body["warning"] = f"stored, but not queued: {reason} (gpu-image-worker submit can queue them later)"
    return JSONResponse(body, status_code=201)


def _queue_problem(e: redis.RedisError) -> tuple[str, str]:
    """A code and a sentence for why Redis did not take a job."""
    # The server's own words, after what the client says of the pipeline command
    # (whose arguments, a job id among them, could contain anything).
    said = str(e).rpartition("caused error: ")[2]
    if said.startswith("MISCONF"):
        return "redis-cannot-write", f"Redis refuses writes: it cannot write to its disk (full?): {said}"
    if isinstance(e, redis.exceptions.OutOfMemoryError):
        return "redis-out-of-memory", f"Redis is out of memory: {said}"
    if isinstance(e, (redis.ConnectionError, redis.TimeoutError)):
        return "redis-unavailable", f"Redis was not reachable: {said}"
    return "redis-error", f"Redis refused the job: {said}"


async def _images(form: FormData) -> list[tuple[UploadFile, str]]:
    """Every file of the form with its image type; refused whole when one is not an image."""
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
    return kinds


def _store_all(kinds: list[tuple[UploadFile, str]], root: Path, user: str) -> list[tuple[Path, int]]:
    """Store every file or none: a failure part-way removes what was stored."""
    stored: list[tuple[Path, int]] = []
    try:
        for f, _kind in kinds:
            f.file.seek(0)
            path = store_upload(f.file, root, user, f.filename or "upload")
            stored.append((path, path.stat().st_size))
    except BaseException as e:
        for path, _ in stored:
            path.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _storage_error(e, root) from None
        raise
    return stored


def _storage_error(e: OSError, root: Path) -> ApiError:
    log.error("[SERVE] Cannot store an upload in %s: %s", root, e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return ApiError(507, "storage-full", f"the uploads directory is full ({e.strerror}); nothing was stored")
    return ApiError(500, "storage-error", f"the upload could not be stored ({e.strerror}); nothing was stored")
