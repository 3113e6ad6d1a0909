"""`gpu-image-worker serve`: upload server, worker slots and (when needed) an
embedded Redis in one command. Ctrl-C stops all three; a second Ctrl-C stops
at once, putting jobs in hand back on the queue."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from ..queue.connect import answers, connector, describe, redis_url
from ..serve.app import create_app
from ..serve.embedded import EmbeddedRedis, EmbeddedRedisError
from ..serve.server import announce, listen, make_server, stop_on_signals
from ..serve.state import Settings
from ..serve.supervisor import Supervisor, supervise
from ..worker.config import Config
from ..worker.worker import Worker
from .options import non_negative_int, positive_float, positive_int

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
    _add_worker_options(p)
    _add_place_options(p)
    _add_limit_options(p)
    return p


def _add_worker_options(p: argparse.ArgumentParser) -> None:
    """The worker's flags: which Redis, how many slots, how many retries."""
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


def _add_place_options(p: argparse.ArgumentParser) -> None:
    """Where the server listens, where the data goes, which Redis to start."""
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address of the upload server (default 127.0.0.1; 0.0.0.0 opens it to the network)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests naming this host (repeatable; '*': any). Without it: IP addresses, "
        "localhost, the --host name, and this machine's names when --host is 0.0.0.0 or ::",
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


def _add_limit_options(p: argparse.ArgumentParser) -> None:
    """The token, request limits and timeouts, CORS, shutdown, logging."""
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
        "--max-connections", type=positive_int, default=1000, metavar="N", help="most open connections (default 1000)"
    )
    p.add_argument(
        "--max-client-connections",
        type=positive_int,
        default=64,
        metavar="N",
        help="most open connections from one client address (default 64)",
    )
    for flag, default, what in (
        ("--read-timeout", 20.0, "a request body that stalls this long gets 408"),
        ("--upload-timeout", 300.0, "a request body must arrive within this time"),
        ("--header-timeout", 10.0, "a request line and headers must arrive within this time"),
        ("--shutdown-timeout", 10.0, "on Ctrl-C, how long the slots may finish jobs in hand"),
    ):
        p.add_argument(
            flag, type=positive_float, default=default, metavar="SECONDS", help=f"{what} (default {default:g})"
        )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow cross-origin requests from ORIGIN (repeatable; default: none)",
    )
    p.add_argument("--access-log", action="store_true", help="log every HTTP request")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    data_dir = Path(args.data_dir).resolve()
    uploads = Path(args.uploads).resolve() if args.uploads else data_dir / "uploads"
    token = args.token or os.environ.get(TOKEN_ENV) or None
    try:
        url, configured = _redis_url(args)
        _writable(uploads)
        listener = listen(args.host, args.port)
    except (_Refused, OSError) as e:
        where = f"cannot listen on {args.host}:{args.port}: " if isinstance(e, OSError) else ""
        print(f"gpu-image-worker serve: error: {where}{e}", file=sys.stderr)
        return 2
    try:
        url, embedded = _choose_redis(args, url, configured, data_dir)
    except _Refused as e:
        print(f"gpu-image-worker serve: error: {e}", file=sys.stderr)
        listener.close()
        return 2
    worker: Worker | None = None
    worker_thread: threading.Thread | None = None
    try:
        settings = Settings(
            uploads_root=uploads,
            redis_url=url,
            token=token,
            max_body_bytes=args.max_upload_bytes,
            max_files=args.max_files,
            read_timeout=args.read_timeout,
            body_timeout=args.upload_timeout,
            cors_origins=tuple(args.cors_origin),
            host=args.host,
            allowed_hosts=tuple(args.allowed_host),
            embedded=embedded.status if embedded is not None else None,
        )
        server = make_server(
            create_app(settings),
            args.header_timeout,
            args.access_log,
            max_connections=args.max_connections,
            per_client=args.max_client_connections,
        )
        worker, worker_thread = _start_worker(args, url, uploads)
        stop_on_signals(server, settings, worker, args.shutdown_timeout)
        announce(listener, uploads, token, TOKEN_ENV)
        server.run(sockets=[listener])
    finally:
        if worker is not None and worker_thread is not None:
            worker.stopping.set()
            worker_thread.join(args.shutdown_timeout + 15)
        if embedded is not None:  # after the slots: they record or give back their jobs first
            embedded.stop()
        listener.close()
    return 0


def _writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise _Refused(f"cannot write to {directory}: {e.strerror}") from None


class _Refused(Exception):
    """The command cannot start as asked; the message says why."""


def _redis_url(args: argparse.Namespace) -> tuple[str, bool]:
    """The Redis URL from flags and environment, and whether one was configured."""
    env = os.environ
    configured = bool(args.redis or any(env.get(k) for k in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT")))
    try:
        url = redis_url(args.redis, args.db, env)
    except ValueError as e:
        raise _Refused(str(e)) from None
    if configured and args.embedded:
        raise _Refused("--embedded and -redis/REDIS_URL/REDIS_HOST/REDIS_PORT exclude each other")
    return url, configured


def _choose_redis(
    args: argparse.Namespace, url: str, configured: bool, data_dir: Path
) -> tuple[str, Supervisor | None]:
    """The configured Redis, else the one answering at the default address,
    else an embedded one started now (returned, to be stopped at the end)."""
    if configured:
        log.info(f"[REDIS] Using the configured Redis at {describe(url)}")
        return url, None
    if not args.embedded and answers(url):
        log.info(f"[REDIS] Using the Redis answering at {describe(url)} (give -redis to choose another)")
        return url, None
    try:
        embedded = supervise(EmbeddedRedis(data_dir / "redis", port=args.redis_port), log.info)
    except EmbeddedRedisError as e:
        raise _Refused(f"no Redis on {describe(url)} and the embedded one did not start: {e}") from None
    return embedded.server.url(args.db or 0), embedded


def _start_worker(args: argparse.Namespace, url: str, uploads: Path) -> tuple[Worker | None, threading.Thread | None]:
    """The worker's slots in this process, confined to the uploads tree (none with -workers 0)."""
    if not args.workers:
        log.info(
            f"[MAIN] No worker slots here (-workers 0): run gpu-image-worker elsewhere with --allowed-root {uploads}"
        )
        return None, None
    config = Config(
        workers=args.workers,
        max_retries=args.max_retries,
        allowed_roots=(os.path.realpath(uploads),),
        shutdown_timeout=args.shutdown_timeout,
    )
    worker = Worker(connector(url, config.block_timeout), config)
    log.info(f"[MAIN] Starting Image Worker with {config.workers} CPU workers")
    log.info(f"[MAIN] Redis: {describe(url)}")
    log.info(f"[MAIN] Allowed roots: {', '.join(config.allowed_roots)}")
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, name="MAIN", daemon=True)
    thread.start()
    return worker, thread


if __name__ == "__main__":
    sys.exit(main())
