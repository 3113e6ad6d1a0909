"""`gpu-image-worker serve`: upload server, worker slots and (when needed) an
embedded Redis in one command. Ctrl-C stops all three; a second Ctrl-C stops
at once, putting jobs in hand back on the queue."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import redis
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from fastimg.cli.options import non_negative_int, positive_float, positive_int
from fastimg.queue.connect import connector, describe, redis_url
from fastimg.worker.config import Config
from fastimg.worker.worker import Worker

from .app import Settings, create_app
from .embedded import EmbeddedRedis, EmbeddedRedisError

log = logging.getLogger("fastimg.worker")  # the worker's logger: [MAIN] lines look the same
TOKEN_ENV = "FASTIMG_SERVE_TOKEN"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpu-image-worker serve",
        description="Start the whole system on this machine: an upload server with a live page, "
        "the worker slots, and a Redis. Without -redis (or REDIS_URL/REDIS_HOST/REDIS_PORT), the Redis "
        "answering on localhost:6379 is used, else an embedded one is started with its data in --data-dir.",
        epilog=f"environment: {TOKEN_ENV} (as --token), REDIS_URL, REDIS_HOST, REDIS_PORT, REDIS_DB, "
        "REDIS_USERNAME, REDIS_PASSWORD (as for the worker). docs/serve.md has the API.",
    )
    p.add_argument(
        "-redis",
        "--redis",
        metavar="ADDR",
        help="use this Redis (host:port or redis:// URL); no embedded server is started",
    )
    p.add_argument("-db", "--db", type=non_negative_int, help="Redis database number (default 0)")
    p.add_argument(
        "-workers",
        "--workers",
        type=non_negative_int,
        default=4,
        help="worker slots in this process (default 4; 0: workers run elsewhere)",
    )
    p.add_argument(
        "-max-retries",
        "--max-retries",
        type=non_negative_int,
        default=3,
        help="retries of a failing job before it goes to image:failed (default 3)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address of the upload server (default 127.0.0.1; 0.0.0.0 opens it to the network)",
    )
    p.add_argument(
        "--port", type=non_negative_int, default=8000, help="port of the upload server (default 8000; 0: any)"
    )
    p.add_argument(
        "--data-dir",
        default="fastimg-data",
        metavar="DIR",
        help="uploads (unless --uploads) and the embedded Redis's AOF go here (default ./fastimg-data)",
    )
    p.add_argument(
        "--uploads",
        metavar="DIR",
        help="uploads root: files are stored as DIR/<userId>/<uuid>-<name>, outputs in "
        "DIR/<userId>/processed/ (default DATA_DIR/uploads); the worker may only touch this tree",
    )
    p.add_argument(
        "--embedded", action="store_true", help="start the embedded Redis even when one answers on localhost:6379"
    )
    p.add_argument(
        "--redis-port",
        type=non_negative_int,
        metavar="PORT",
        help="port of the embedded Redis (default 6379 when free, else any free port; 0: any free port)",
    )
    p.add_argument(
        "--token",
        default=None,
        help=f"require this bearer token for uploads, status, events and files (or set {TOKEN_ENV}, "
        "which keeps it out of the process list)",
    )
    p.add_argument(
        "--max-upload-bytes",
        type=positive_int,
        default=64 * 1024 * 1024,
        metavar="N",
        help="largest request body (default 64 MiB)",
    )
    p.add_argument("--max-files", type=positive_int, default=20, metavar="N", help="most files per upload (default 20)")
    p.add_argument(
        "--read-timeout",
        type=positive_float,
        default=20.0,
        metavar="SECONDS",
        help="a request body that stalls this long gets 408 (default 20)",
    )
    p.add_argument(
        "--upload-timeout",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="a request body must arrive within this time (default 300)",
    )
    p.add_argument(
        "--header-timeout",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="a request line and headers must arrive within this time (default 10)",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow cross-origin requests from ORIGIN (repeatable; default: none)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="on Ctrl-C, how long the slots may finish jobs in hand (default 10)",
    )
    p.add_argument("--access-log", action="store_true", help="log every HTTP request")
    return p


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class _HeaderDeadline(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, plus a deadline for a request's line and
    headers: uvicorn resets its keep-alive timer on every byte, so a client
    sending headers one byte at a time would hold the connection forever."""

    header_timeout = 10.0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request on this keep-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        deadline = getattr(self, "_deadline", None)
        if deadline is not None:
            deadline.cancel()
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


class _Server(uvicorn.Server):
    # Signals are handled by main(), which stops the worker too; uvicorn's own
    # handlers would re-raise SIGINT after the server stops.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    env = os.environ
    say = log.info
    data_dir = Path(args.data_dir).resolve()
    uploads = Path(args.uploads).resolve() if args.uploads else data_dir / "uploads"
    token = args.token or env.get(TOKEN_ENV) or None

    configured = args.redis or any(env.get(k) for k in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT"))
    try:
        url = redis_url(args.redis, args.db, env)
    except ValueError as e:
        print(f"gpu-image-worker serve: error: {e}", file=sys.stderr)
        return 2
    if configured and args.embedded:
        print(
            "gpu-image-worker serve: error: --embedded and -redis/REDIS_URL/REDIS_HOST/REDIS_PORT exclude each other",
            file=sys.stderr,
        )
        return 2
    # The HTTP port before Redis: a port in use fails before anything is started.
    try:
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        listener = socket.create_server((args.host, args.port), family=family)
    except OSError as e:
        print(f"gpu-image-worker serve: error: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2

    embedded: EmbeddedRedis | None = None
    if configured:
        say(f"[REDIS] Using the configured Redis at {describe(url)}")
    elif not args.embedded and _answers(url):
        say(f"[REDIS] Using the Redis answering at {describe(url)} (give -redis to choose another)")
    else:
        try:
            embedded = EmbeddedRedis(data_dir / "redis", port=args.redis_port).start()
        except EmbeddedRedisError as e:
            print(
                f"gpu-image-worker serve: error: no Redis on {describe(url)} and the embedded one did not start: {e}",
                file=sys.stderr,
            )
            listener.close()
            return 2
        url = embedded.url(args.db or 0)
        say(
            f"[REDIS] Embedded {embedded.name} {embedded.version} on {embedded.address} "
            f"(AOF in {embedded.data_dir}); other producers and workers: -redis {embedded.address}"
        )

    worker: Worker | None = None
    worker_thread: threading.Thread | None = None
    try:
        uploads.mkdir(parents=True, exist_ok=True)
        settings = Settings(
            uploads_root=uploads,
            redis_url=url,
            token=token,
            max_body_bytes=args.max_upload_bytes,
            max_files=args.max_files,
            read_timeout=args.read_timeout,
            body_timeout=args.upload_timeout,
            cors_origins=tuple(args.cors_origin),
        )
        app = create_app(settings)
        protocol = type("HeaderDeadline", (_HeaderDeadline,), {"header_timeout": args.header_timeout})
        server = _Server(
            uvicorn.Config(
                app,
                http=protocol,
                log_config=None,
                access_log=args.access_log,
                lifespan="on",
                timeout_keep_alive=5,
                timeout_graceful_shutdown=5,
                h11_max_incomplete_event_size=16 * 1024,
                limit_concurrency=settings.max_event_streams + 100,
            )
        )
        if args.workers:
            config = Config(
                workers=args.workers,
                max_retries=args.max_retries,
                allowed_roots=(os.path.realpath(uploads),),
                shutdown_timeout=args.shutdown_timeout,
            )
            worker = Worker(connector(url, config.block_timeout), config)
            say(f"[MAIN] Starting Image Worker with {config.workers} CPU workers")
            say(f"[MAIN] Redis: {describe(url)}")
            say(f"[MAIN] Allowed roots: {', '.join(config.allowed_roots)}")
            worker_thread = threading.Thread(
                target=worker.run, kwargs={"install_signals": False}, name="MAIN", daemon=True
            )
            worker_thread.start()
        else:
            say(
                "[MAIN] No worker slots here (-workers 0): run gpu-image-worker elsewhere "
                f"with --allowed-root {uploads}"
            )

        def on_signal(signum: int, _frame: Any) -> None:
            name = signal.Signals(signum).name
            if not server.should_exit:
                say(
                    f"[MAIN] Received {name}: stopping the upload server and the worker "
                    f"(jobs in hand get up to {args.shutdown_timeout:g}s); again to stop at once"
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
        host, port = listener.getsockname()[:2]
        shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
        say(f"[SERVE] Uploads in {uploads}")
        say(f"[SERVE] Open http://{shown}:{port}/ in a browser" + (" (bearer token required)" if token else ""))
        server.run(sockets=[listener])
    finally:
        if worker is not None and worker_thread is not None:
            worker.stopping.set()
            worker_thread.join(args.shutdown_timeout + 15)
        if embedded is not None:
            embedded.stop()
            say(f"[REDIS] Embedded {embedded.name} stopped")
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
