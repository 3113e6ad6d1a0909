"""POST /upload: store every file of a request, or none, and queue a job
for each, as the seed's server does."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fastimg.image.spec import OPERATIONS
from fastimg.producer import IMAGE_TYPES, detect_image_type, store_upload

from .access import USER_HEADER, authorise, checked_user
from .errors import ApiError
from .state import served

log = logging.getLogger("fastimg.serve")


def file_url(user: str, name: str) -> str:
    return f"/files/{quote(user, safe='')}/processed/{quote(name, safe='')}"


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
    queued_all = True
    for (f, kind), (path, size) in zip(kinds, stored, strict=True):
        log.info("[SERVE] Stored %s for user %s (%d bytes)", path.name, user, size)
        job = await run_in_threadpool(state.producer.enqueue, path, user, state.root)
        job_id = path.stem
        state.owners.add(job_id, user)
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
    except BaseException:
        for path, _ in stored:
            path.unlink(missing_ok=True)
        raise
    return stored
