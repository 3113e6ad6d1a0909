"""Files the upload server sends: a user's outputs, read-only, and the page."""

from __future__ import annotations

import os
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from fastimg.image.spec import OPERATIONS

from .access import authorise, valid_user_id
from .errors import ApiError
from .state import served

STATIC = Path(__file__).parent / "static"
_OUTPUT_NAME = re.compile(r"[^/\\\x00-\x1f\x7f]+_(" + "|".join(map(re.escape, OPERATIONS)) + r")\.webp")


async def processed_file(request: Request) -> Response:
    authorise(request)
    root = served(request).root
    user, name = request.path_params["user"], request.path_params["name"]
    if not valid_user_id(user) or not _OUTPUT_NAME.fullmatch(name) or name.startswith("."):
        raise ApiError(404, "not-found", "no such output")
    path = root / user / "processed" / name
    real = os.path.realpath(path)
    # Symlinks resolved: nothing outside the uploads root is ever served.
    if os.path.commonpath([real, str(root)]) != str(root) or not os.path.isfile(real):
        raise ApiError(404, "not-found", "no such output (yet)")
    return FileResponse(real, media_type="image/webp", headers={"Cache-Control": "no-cache"})


async def index(_request: Request) -> Response:
    return FileResponse(
        STATIC / "index.html", media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"}
    )
