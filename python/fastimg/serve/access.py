"""Who may use the upload server: the bearer token, and the user ids that
name upload directories."""

from __future__ import annotations

import hmac
import re

from starlette.requests import Request

from .errors import ApiError
from .state import served

USER_HEADER = "x-user-id"

# The rule store_upload applies to user ids (tests/test_serve_api.py checks the
# two agree), plus a length bound so an id always fits in a file name.
_USER_ID = re.compile(r"[A-Za-z0-9._ -]{1,64}")


def valid_user_id(user_id: str) -> bool:
    return bool(_USER_ID.fullmatch(user_id)) and user_id not in (".", "..") and user_id == user_id.strip()


def authorise(request: Request) -> None:
    token = served(request).settings.token
    if not token:
        return
    header = request.headers.get("authorization", "")
    given = header[7:] if header[:7].lower() == "bearer " else request.query_params.get("access_token", "")
    if not hmac.compare_digest(given.encode(), token.encode()):
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
