"""Where a request comes from: the Host it names (a name that is not this
server's is a DNS-rebinding page reading the API), and, for a request that
changes something, the page that sent it (another origin's page must not
store or queue images). Every answer carries the headers that keep the page
to its own scripts and out of other sites' frames."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error

# Only the page's own files: no inline script, no handler attributes, nothing
# from elsewhere. blob: shows the original before it is uploaded.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # ?access_token= in image and event URLs must not leave in a Referer.
    (b"referrer-policy", b"no-referrer"),
    # Other sites' pages cannot embed the outputs with <img> (no-cors reads).
    (b"cross-origin-resource-policy", b"same-origin"),
]
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def allowed_hosts(bind: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names a Host header may carry, besides IP addresses (which no DNS
    answer can rebind): localhost, the ``--host`` name, this machine's names
    when listening on every address, and ``extra`` ("*": any)."""
    names = {"localhost", _host_name(bind)}
    if bind in _WILDCARDS:
        names |= {socket.gethostname(), socket.getfqdn()}
    names |= {_host_name(name) for name in extra}
    return frozenset(n.lower().rstrip(".") for n in names if n)


def _host_name(value: str) -> str:
    """The name part of a Host header or an --allowed-host: without port and brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Guard:
    """ASGI middleware: refuses a foreign Host (421) and a state-changing
    request from another origin (403); adds HEADERS to every answer. Clients
    that send neither Origin nor Sec-Fetch-Site (curl, scripts) are not
    browsers acting for another site and pass."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str], origins: Iterable[str] = ()) -> None:
        self.app = app
        self.hosts = hosts
        self.origins = frozenset(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                message["headers"] = headers + [h for h in HEADERS if h[0] not in present]
            await send(message)

        refusal = self.refusal(scope)
        if refusal is not None:
            status, code, message = refusal
            response = error(status, code, message)
            response.headers["Connection"] = "close"
            await response(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)

    def refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        name = _host_name(host)
        if host and "*" not in self.hosts and name not in self.hosts and not _is_address(name):
            return (
                421,
                "unknown-host",
                f"this server does not answer for the name {name!r} "
                f"(start serve with --allowed-host {name} to accept it)",
            )
        if scope["method"] in _SAFE_METHODS:
            return None
        origin = headers.get("origin")
        site = headers.get("sec-fetch-site")
        if origin in self.origins:
            return None
        sender = None
        if origin is not None:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or parts.netloc.lower() != host.lower():
                sender = f"the page of {origin!r}"
        if sender is None and site is not None and site not in ("same-origin", "none"):
            sender = f"a {site} page"
        if sender is None:
            return None
        return 403, "cross-origin", f"{scope['method']} from {sender} refused: only this server's own page may send it"
