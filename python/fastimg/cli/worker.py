"""`gpu-image-worker` without a command: the worker, from flags and environment.

The seed's flags are spelled with one dash (-redis, -db, -workers,
-max-retries); the two-dash forms work too. Flags win over the environment."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from ..image.limits import Limits
from ..image.spec import SpecError
from ..queue.connect import connector, describe, redis_url
from ..queue.jobs import normalise_roots
from ..worker.allocator import tune_malloc
from ..worker.config import Config
from ..worker.worker import Worker
from .options import add_output_options, non_negative_int, output_spec, positive_float, positive_int, size

ENV_HELP = """environment:
  REDIS_URL         redis://[user:password@]host:port/db, or rediss:// for TLS;
                    redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]
                    for the primary Sentinel names (rediss+sentinel:// for TLS);
                    any of them may add ?wait_replicas=N&wait_timeout_ms=T: a
                    record counts once N replicas have it (docs/operations.md)
  REDIS_HOST        Redis host (default localhost)
  REDIS_PORT        Redis port (default 6379)
  REDIS_DB          database number (default 0)
  REDIS_USERNAME    ACL user name (of the data nodes, with Sentinel)
  REDIS_PASSWORD    password (for the default user, or REDIS_USERNAME)
  REDIS_SENTINEL_USERNAME, REDIS_SENTINEL_PASSWORD
                    the Sentinels' user and password, when they differ from
                    the data nodes' (or none)
  FASTIMG_ALLOWED_ROOTS  allowed roots, separated by ':' (as --allowed-root)
  MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_
                    glibc malloc settings; the worker picks its own unless
                    these are set (docs/performance.md)
Flags win over the environment; -redis wins over REDIS_URL, which wins over
REDIS_HOST/REDIS_PORT. Passwords are read from the environment or the URL only,
so they never show in the process list.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpu-image-worker",
        description="Take image jobs from the Redis list image:jobs and write thumbnail, "
        "blur and low-quality WebP files, recording each outcome on image:done, "
        "image:retry or image:failed. Other commands (each with --help): serve (upload page, worker "
        "and Redis on one machine), process PHOTO... "
        "(no Redis), submit FILE..., stats, requeue-failed, purge-done, purge-failed.",
        epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_queue_options(p)
    _add_retry_options(p)
    _add_resource_options(p)
    add_output_options(p)
    return p


def _add_queue_options(p: argparse.ArgumentParser) -> None:
    """The seed's flags: where the queue is, how many slots, how many retries; and the allowed roots."""
    p.add_argument(
        "-redis",
        "--redis",
        metavar="ADDR",
        help="Redis address host:port, or a redis://, rediss:// or redis+sentinel:// URL (default localhost:6379)",
    )
    p.add_argument("-db", "--db", type=non_negative_int, help="Redis database number (default 0)")
    p.add_argument(
        "-workers",
        "--workers",
        type=positive_int,
        default=Config.workers,
        help=f"jobs processed concurrently (default {Config.workers})",
    )
    p.add_argument(
        "-max-retries",
        "--max-retries",
        type=non_negative_int,
        default=Config.max_retries,
        help=f"retries of a failing job before it goes to image:failed (default {Config.max_retries})",
    )
    p.add_argument(
        "--allowed-root",
        action="append",
        default=None,
        metavar="DIR",
        help="only read and write below DIR (repeatable); without it any absolute path is accepted",
    )


def _add_retry_options(p: argparse.ArgumentParser) -> None:
    """Backoff, leases, shutdown and how many records the lists keep."""
    p.add_argument(
        "--retry-base",
        type=positive_float,
        default=Config.backoff_base,
        metavar="SECONDS",
        help=f"backoff before the first retry, doubling each time, with jitter (default {Config.backoff_base:g})",
    )
    p.add_argument(
        "--retry-cap",
        type=positive_float,
        default=Config.backoff_cap,
        metavar="SECONDS",
        help=f"longest backoff between retries (default {Config.backoff_cap:g})",
    )
    p.add_argument(
        "--heartbeat-ttl",
        type=positive_float,
        default=Config.heartbeat_ttl,
        metavar="SECONDS",
        help=f"lease of a worker; its jobs are recovered this long after it dies (default {Config.heartbeat_ttl:g})",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=positive_float,
        default=Config.shutdown_timeout,
        metavar="SECONDS",
        help="after SIGTERM/SIGINT, how long to finish jobs in hand before putting them back "
        f"(default {Config.shutdown_timeout:g})",
    )
    p.add_argument(
        "--done-cap",
        type=non_negative_int,
        default=Config.done_cap,
        metavar="N",
        help=f"keep the newest N records on image:done (0: unlimited; default {Config.done_cap})",
    )
    p.add_argument(
        "--failed-cap",
        type=non_negative_int,
        default=Config.failed_cap,
        metavar="N",
        help=f"keep the newest N records on image:failed (0: unlimited; default {Config.failed_cap})",
    )


def _add_resource_options(p: argparse.ArgumentParser) -> None:
    """Input limits, the metrics port, memory and durability."""
    p.add_argument(
        "--max-input-bytes",
        type=positive_int,
        default=Limits.max_input_bytes,
        metavar="N",
        help=f"refuse larger input files as too-large (default {Limits.max_input_bytes})",
    )
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=Limits.max_pixels,
        metavar="N",
        help=f"refuse images with more pixels as too-large (default {Limits.max_pixels})",
    )
    p.add_argument(
        "--metrics-port",
        type=non_negative_int,
        metavar="PORT",
        help="serve Prometheus /metrics, /healthz and /readyz on this port (default: off)",
    )
    p.add_argument(
        "--metrics-host",
        default=Config.metrics_host,
        metavar="ADDR",
        help=f"address the metrics port binds to (default {Config.metrics_host}; 0.0.0.0 for all)",
    )
    p.add_argument(
        "--memory-budget",
        type=size,
        metavar="SIZE",
        help="memory all jobs of this process may use at once, e.g. 4G; jobs wait for room and "
        "a job that could never fit fails as too-large (default: 3/4 of the cgroup limit, "
        "else of the memory available at start)",
    )
    p.add_argument(
        "--no-fsync",
        action="store_true",
        help="do not flush outputs to disk before recording a job as done (faster; a power loss "
        "can then lose outputs of done jobs)",
    )


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    env = os.environ
    try:
        url = redis_url(args.redis, args.db, env)
        roots_given: list[str] = args.allowed_root or [r for r in env.get("FASTIMG_ALLOWED_ROOTS", "").split(":") if r]
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
        limits=Limits(args.max_input_bytes, args.max_pixels, args.max_frames, args.input_formats, args.keep_partial),
        spec=spec,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        memory_budget=args.memory_budget,
        durable=not args.no_fsync,
    )
    say = logging.getLogger("fastimg.worker").info
    say(f"[MAIN] Starting Image Worker with {config.workers} CPU workers")
    say(f"[MAIN] Redis: {describe(url)}")
    if roots:
        say(f"[MAIN] Allowed roots: {', '.join(roots)}")
    else:
        say(
            "[MAIN] Allowed roots: any absolute path (no --allowed-root given): "
            "jobs may read and write anywhere this user can"
        )
    tune_malloc()
    worker = Worker(connector(url, config.block_timeout), config)
    code = worker.run()
    if worker.hard_stop.is_set():
        # Jobs in hand are back on the queue and no output can land any more:
        # leave now instead of waiting for encodes nobody will use.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
