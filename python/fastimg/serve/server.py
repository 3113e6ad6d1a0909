"""The HTTP server under the upload app: uvicorn, with a bound on each client
address's connections and a deadline on each request's line and headers,
without signal handlers of its own (the command stops the server and the
worker together); and what the command says when it starts."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import resource
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..worker.worker import Worker
from .state import Settings

say = logging.getLogger("fastimg.worker").info  # the worker's logger: [MAIN] lines look the same
warn = logging.getLogger("fastimg.worker").warning


_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s"
)


class Connection(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, bounded per client address and in time.

    One address may hold ``per_client`` connections; the next ones are
    answered 503 and closed at once, so one client cannot take the places
    every other client needs (uvicorn's own bound is server-wide). And a
    request's line and headers must arrive within ``header_timeout``: uvicorn
    resets its keep-alive timer on every byte, so a client sending headers one
    byte at a time would hold the connection forever."""

    header_timeout = 10.0
    per_client = 64
    # Per server (make_server gives each its own): connections per address,
    # and the addresses refused since they last held none (logged once).
    held: ClassVar[dict[str, int]] = {}
    refused: ClassVar[set[str]] = set()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._address: str | None = self.client[0] if self.client else None
        if self._address is not None:
            if self.held.get(self._address, 0) >= self.per_client:
                # Nor counted by uvicorn's server-wide bound: a crowd of
                # refused connections waiting to be closed on a busy loop
                # would otherwise have other clients' requests answered 503.
                self.connections.discard(self)
                self._refuse(transport, self._address)
                self._address = None  # not counted
                return
            self.held[self._address] = self.held.get(self._address, 0) + 1
        self._arm()

    def _refuse(self, transport: Any, address: str) -> None:
        if address not in self.refused:
            self.refused.add(address)
            say(f"[SERVE] {address} holds {self.per_client} connections: refusing more from it")
        body = b'{"error":"too-many-connections","message":"this address holds %d connections already"}' % (
            self.per_client
        )
        transport.write(_REFUSED % (len(body), body))
        transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request on this keep-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        deadline = getattr(self, "_deadline", None)
        if deadline is not None:
            deadline.cancel()
        address = getattr(self, "_address", None)
        if address is not None:
            self.held[address] -= 1
            if not self.held[address]:
                del self.held[address]
                self.refused.discard(address)
        super().connection_lost(exc)

    def _arm(self) -> None:
        waiting_after = self.cycle  # a new request replaces it
        previous: asyncio.TimerHandle | None = getattr(self, "_deadline", None)
        if previous is not None:
            previous.cancel()

        def expire() -> None:
            if self.cycle is waiting_after and not self.transport.is_closing():
                self.transport.close()

        self._deadline: asyncio.TimerHandle | None = self.loop.call_later(self.header_timeout, expire)


class Server(uvicorn.Server):
    # Signals are handled by main(), which stops the worker too; uvicorn's own
    # handlers would re-raise SIGINT after the server stops.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def make_server(
    app: Starlette,
    header_timeout: float,
    access_log: bool,
    max_connections: int = 1000,
    per_client: int = 64,
) -> Server:
    _enough_files(max_connections)
    protocol = type(
        "Connection",
        (Connection,),
        {"header_timeout": header_timeout, "per_client": per_client, "held": {}, "refused": set()},
    )
    return Server(
        uvicorn.Config(
            app,
            http=protocol,
            log_config=None,
            access_log=access_log,
            lifespan="on",
            timeout_keep_alive=5,
            timeout_graceful_shutdown=5,
            h11_max_incomplete_event_size=16 * 1024,
            limit_concurrency=max_connections,
        )
    )


def announce(listener: socket.socket, uploads: Path, token: str | None, token_env: str) -> None:
    """Where to look, and a warning that cannot be missed when anyone on the network may upload."""
    host, port = listener.getsockname()[:2]
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    say(f"[SERVE] Uploads in {uploads}")
    say(f"[SERVE] Open http://{shown}:{port}/ in a browser" + (" (bearer token required)" if token else ""))
    if token or ipaddress.ip_address(host).is_loopback:
        return
    where = "every address of this machine" if host in ("0.0.0.0", "::") else host
    for line in (
        f"listening on {where} (port {port}) WITHOUT A TOKEN:",
        "anyone who can reach this machine can upload images and see every user's uploads, events and outputs.",
        f"Set {token_env} (or --token), or listen on 127.0.0.1 behind a reverse proxy that authenticates.",
    ):
        warn(f"[SERVE] WARNING: {line}")


def _enough_files(connections: int) -> None:
    """A descriptor for every connection allowed, and some to spare, where the hard limit permits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def listen(host: str, port: int) -> socket.socket:
    """The HTTP port, taken before Redis: a port in use fails before anything is started."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def stop_on_signals(server: Server, settings: Settings, worker: Worker | None, shutdown_timeout: float) -> None:
    """First SIGINT or SIGTERM: the server and the worker stop, jobs in hand
    get ``shutdown_timeout``; the second: both stop at once."""

    def on_signal(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if not server.should_exit:
            say(
                f"[MAIN] Received {name}: stopping the upload server and the worker "
                f"(jobs in hand get up to {shutdown_timeout:g}s); again to stop at once"
            )
            server.should_exit = True
            settings.closing.set()
            if worker:
                worker.stopping.set()
        else:
            say(f"[MAIN] Received {name} again: stopping now")
            server.force_exit = True
            if worker:
                worker.hard_stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
