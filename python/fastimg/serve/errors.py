"""The upload server's errors: every one is JSON, ``{"error": CODE,
"message": TEXT}``, CODE machine-readable (docs/serve.md lists them)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

log = logging.getLogger("fastimg.serve")


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


EXCEPTION_HANDLERS = {HTTPException: _http_error, ClientDisconnect: _client_gone, Exception: _internal_error}
