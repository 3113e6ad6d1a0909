"""`gpu-image-worker`: command line and environment.

The seed's flags are spelled with one dash (-redis, -db, -workers,
-max-retries); the two-dash forms work too. Flags win over the environment."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from typing import Callable, List, Optional, Sequence, Tuple
from urllib.parse import quote, urlsplit

import redis

from .allocator import tune_malloc
from .jobs import normalise_roots
from .outputs import SPEC_V1, SpecError, apply_overrides, parse_assignment
from .limits import Limits
from .worker import Config, Worker

ENV_HELP = """environment:
  REDIS_URL         redis://[user:password@]host:port/db, or rediss:// for TLS
  REDIS_HOST        Redis host (default localhost)
  REDIS_PORT        Redis port (default 6379)
  REDIS_DB          database number (default 0)
  REDIS_USERNAME    ACL user name
  REDIS_PASSWORD    password (for the default user, or REDIS_USERNAME)
  FASTIMG_ALLOWED_ROOTS  allowed roots, separated by ':' (as --allowed-root)
  MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_
                    glibc malloc settings; the worker picks its own unless
                    these are set (docs/performance.md)
Flags win over the environment; -redis wins over REDIS_URL, which wins over
REDIS_HOST/REDIS_PORT. Passwords are read from the environment or the URL only,
so they never show in the process list.
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpu-image-worker",
        description="Take image jobs from the Redis list image:jobs and write thumbnail, "
        "blur and low-quality WebP files, recording each outcome on image:done, "
        "image:retry or image:failed. Other commands (each with --help): process PHOTO... "
        "(no Redis), submit FILE..., stats, requeue-failed, purge-done, purge-failed.",
        epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-redis", "--redis", metavar="ADDR",
                   help="Redis address host:port, or a redis:// or rediss:// URL (default localhost:6379)")
    p.add_argument("-db", "--db", type=_non_negative_int, help="Redis database number (default 0)")
    p.add_argument("-workers", "--workers", type=_positive_int, default=4,
                   help="jobs processed concurrently (default 4)")
    p.add_argument("-max-retries", "--max-retries", type=_non_negative_int, default=3,
                   help="retries of a failing job before it goes to image:failed (default 3)")
    p.add_argument("--allowed-root", action="append", default=None, metavar="DIR",
                   help="only read and write below DIR (repeatable); without it any absolute path is accepted")
    p.add_argument("--retry-base", type=_positive_float, default=1.0, metavar="SECONDS",
                   help="backoff before the first retry, doubling each time, with jitter (default 1)")
    p.add_argument("--retry-cap", type=_positive_float, default=300.0, metavar="SECONDS",
                   help="longest backoff between retries (default 300)")
    p.add_argument("--heartbeat-ttl", type=_positive_float, default=30.0, metavar="SECONDS",
                   help="lease of a worker; its jobs are recovered this long after it dies (default 30)")
    p.add_argument("--shutdown-timeout", type=_positive_float, default=60.0, metavar="SECONDS",
                   help="after SIGTERM/SIGINT, how long to finish jobs in hand before putting them back (default 60)")
    p.add_argument("--done-cap", type=_non_negative_int, default=10_000, metavar="N",
                   help="keep the newest N records on image:done (0: unlimited; default 10000)")
    p.add_argument("--failed-cap", type=_non_negative_int, default=10_000, metavar="N",
                   help="keep the newest N records on image:failed (0: unlimited; default 10000)")
    p.add_argument("--max-input-bytes", type=_positive_int, default=Limits.max_input_bytes, metavar="N",
                   help=f"refuse larger input files as too-large (default {Limits.max_input_bytes})")
    p.add_argument("--max-pixels", type=_positive_int, default=Limits.max_pixels, metavar="N",
                   help=f"refuse images with more pixels as too-large (default {Limits.max_pixels})")
    p.add_argument("--metrics-port", type=_non_negative_int, metavar="PORT",
                   help="serve Prometheus /metrics, /healthz and /readyz on this port (default: off)")
    add_output_options(p)
    return p


def _formats(text: str) -> Tuple[str, ...]:
    from .decode import parse_formats

    try:
        return parse_formats(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_output_options(p: argparse.ArgumentParser) -> None:
    """Options that change what is made, shared by the worker and `process`."""
    p.add_argument("--input-formats", type=_formats, default=Limits.formats, metavar="LIST",
                   help=f"accept inputs in these formats, comma-separated (default {','.join(Limits.formats)}; "
                        "docs/outputs.md); others fail with unsupported-format before any decoder reads them")
    p.add_argument("--max-frames", type=_positive_int, default=Limits.max_frames, metavar="N",
                   help=f"refuse animations with more frames as too-large (default {Limits.max_frames})")
    p.add_argument("--config", metavar="FILE",
                   help='JSON file: {"outputs": {OPERATION: {FIELD: VALUE}}}, the same fields as a '
                        "job's params; changes the defaults of output spec v1")
    p.add_argument("--output", action="append", default=[], metavar="OP.FIELD=VALUE",
                   help="change one default, e.g. thumbnail.quality=75 or blur.sigma=8 (repeatable; "
                        "applied after --config)")


def output_spec(args: argparse.Namespace) -> dict:
    """Output spec v1 with the --config file and --output flags applied."""
    spec = dict(SPEC_V1)
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"--config {args.config}: {e}") from None
        if not isinstance(doc, dict) or set(doc) - {"outputs"}:
            raise ValueError(f'--config {args.config}: expected {{"outputs": {{...}}}}')
        spec = apply_overrides(spec, doc.get("outputs", {}), where="outputs")
    for text in args.output:
        spec = apply_overrides(spec, parse_assignment(text), where="--output")
    return spec


def redis_url(addr: Optional[str], db: Optional[int], env: "os._Environ[str] | dict") -> str:
    """The connection URL from flags and environment (flags first)."""
    if addr and "://" in addr:
        url = addr
    elif addr:
        url = f"redis://{addr}"
    elif env.get("REDIS_URL"):
        url = env["REDIS_URL"]
    else:
        url = f"redis://{env.get('REDIS_HOST', 'localhost')}:{env.get('REDIS_PORT', '6379')}"
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
    if parts.password is None and (env.get("REDIS_PASSWORD") or env.get("REDIS_USERNAME")):
        user = quote(env.get("REDIS_USERNAME", ""), safe="")
        secret = quote(env.get("REDIS_PASSWORD", ""), safe="")
        netloc = f"{user}:{secret}@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
        url = parts._replace(netloc=netloc).geturl()
    if db is None and env.get("REDIS_DB") and not urlsplit(url).path.strip("/"):
        db = int(env["REDIS_DB"])
    if db is not None:
        url = urlsplit(url)._replace(path=f"/{db}").geturl()
    return url


def describe(url: str) -> str:
    """host:port, DB: n, without credentials, for the start-up line."""
    parts = urlsplit(url)
    db = parts.path.strip("/") or "0"
    tls = " (TLS)" if parts.scheme == "rediss" else ""
    return f"{parts.hostname}:{parts.port or 6379}{tls}, DB: {db}"


def connector(url: str, block_timeout: float) -> Callable[[], redis.Redis]:
    def connect() -> redis.Redis:
        # The socket timeout outlasts the blocking read, so a BLMOVE returns
        # before the socket gives up; a dropped connection still ends in time.
        return redis.Redis.from_url(
            url,
            socket_timeout=block_timeout + 10,
            socket_connect_timeout=5,
            health_check_interval=30,
            retry_on_timeout=False,
        )

    return connect


COMMANDS = {
    "process": ("fastimg.worker.oneshot", "main"),
    "submit": ("fastimg.worker.admin", "submit_main"),
    "stats": ("fastimg.worker.admin", "stats_main"),
    "requeue-failed": ("fastimg.worker.admin", "requeue_main"),
    "purge-done": ("fastimg.worker.admin", "purge_done_main"),
    "purge-failed": ("fastimg.worker.admin", "purge_failed_main"),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        module, function = COMMANDS[argv[0]]
        return getattr(importlib.import_module(module), function)(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    env = os.environ
    try:
        url = redis_url(args.redis, args.db, env)
        roots_given: List[str] = args.allowed_root or [r for r in env.get("FASTIMG_ALLOWED_ROOTS", "").split(":") if r]
        roots = normalise_roots(roots_given)
        spec = output_spec(args)
    except (ValueError, SpecError) as e:
        print(f"gpu-image-worker: error: {e}", file=sys.stderr)
        return 2
    config = Config(
        workers=args.workers,
        max_retries=args.max_retries,
        allowed_roots=roots,
        backoff_base=args.retry_base,
        backoff_cap=args.retry_cap,
        heartbeat_ttl=args.heartbeat_ttl,
        shutdown_timeout=args.shutdown_timeout,
        done_cap=args.done_cap,
        failed_cap=args.failed_cap,
        limits=Limits(args.max_input_bytes, args.max_pixels, args.max_frames, args.input_formats),
        spec=spec,
        metrics_port=args.metrics_port,
    )
    say = logging.getLogger("fastimg.worker").info
    say(f"[MAIN] Starting Image Worker with {config.workers} CPU workers")
    say(f"[MAIN] Redis: {describe(url)}")
    if roots:
        say(f"[MAIN] Allowed roots: {', '.join(roots)}")
    else:
        say("[MAIN] Allowed roots: any absolute path (no --allowed-root given): jobs may read and write anywhere this user can")
    tune_malloc()
    return Worker(connector(url, config.block_timeout), config).run()


if __name__ == "__main__":
    sys.exit(main())
