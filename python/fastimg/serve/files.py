"""Files the upload server sends: a user's outputs, read-only, and the page."""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from fastimg.image.job import safe_job_id
from fastimg.image.spec import OPERATIONS

from .access import authorise, valid_user_id
from .errors import ApiError
from .state import served

STATIC = Path(__file__).parent / "static"
_OUTPUT_NAME = re.compile(r"[^/\\\x00-\x1f\x7f]+_(" + "|".join(map(re.escape, OPERATIONS)) + r")\.webp")


def file_url(user: str, name: str) -> str:
    return f"/files/{quote(user, safe='')}/processed/{quote(name, safe='')}"


def archive_url(user: str, job_id: str) -> str:
    """The URL of a job's outputs in one ZIP file."""
    return file_url(user, job_id + ".zip")


async def processed_file(request: Request) -> Response:
    authorise(request)
    root = served(request).root
    user, name = request.path_params["user"], request.path_params["name"]
    if not valid_user_id(user) or name.startswith("."):
        raise ApiError(404, "not-found", "no such output")
    if name.endswith(".zip") and safe_job_id(name[:-4]):
        return await _archive(root, user, name[:-4])
    if not _OUTPUT_NAME.fullmatch(name):
        raise ApiError(404, "not-found", "no such output")
    real = _inside(root, root / user / "processed" / name)
    if real is None:
        raise ApiError(404, "not-found", "no such output (yet)")
    return FileResponse(real, media_type="image/webp", headers={"Cache-Control": "no-cache"})


def _inside(root: Path, path: Path) -> str | None:
    """The real location of the file at ``path`` (symlinks resolved) when it lies
    in the uploads root: nothing outside it is ever served."""
    real = os.path.realpath(path)
    if os.path.commonpath([real, str(root)]) != str(root) or not os.path.isfile(real):
        return None
    return real


async def _archive(root: Path, user: str, job_id: str) -> Response:
    """A job's outputs in one ZIP file (stored: WebP does not compress further)."""

    def pack() -> bytes | None:
        buffer = io.BytesIO()
        found = 0
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for op in OPERATIONS:
                name = f"{job_id}_{op}.webp"
                real = _inside(root, root / user / "processed" / name)
                if real is not None:
                    archive.write(real, name)
                    found += 1
        return buffer.getvalue() if found else None

    data = await run_in_threadpool(pack)
    if data is None:
        raise ApiError(404, "not-found", "no outputs for this job (yet)")
    # No file name here: the page's link names it after the upload (rocket.zip), as it
    # names the outputs; other clients take the URL's, the job id.
    return Response(
        data, media_type="application/zip", headers={"Content-Disposition": "attachment", "Cache-Control": "no-cache"}
    )


async def favicon(_request: Request) -> Response:
    return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon", headers={"Cache-Control": "max-age=86400"})


async def index(_request: Request) -> Response:
    return FileResponse(
        STATIC / "index.html", media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"}
    )
