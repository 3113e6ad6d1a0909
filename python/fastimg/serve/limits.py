"""Limits on a request body: its size, checked while it streams, and the time
it may take to arrive."""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError, error


def size_text(n: int) -> str:
    """Bytes as people read them: 512 bytes, 1.5 KiB, 64 MiB."""
    if n < 1024:
        return f"{n} bytes"
    exponent = min(3, (n.bit_length() - 1) // 10)
    return f"{n / 1024**exponent:.1f}".removesuffix(".0") + " " + ("KiB", "MiB", "GiB")[exponent - 1]


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
                "invalid Content-Length"
                if bad
                else f"the upload is {size_text(int(length))}, over the limit of {size_text(self.max_bytes)}",
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
                        413,
                        "too-large",
                        f"the upload is over the limit of {size_text(self.max_bytes)}",
                        limit=self.max_bytes,
                    )
                body_done = not message.get("more_body", False)
            return message

        await self.app(scope, limited, send)
