"""Operator commands: submit, stats, requeue-failed, purge-done, purge-failed."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from ..image.spec import OPERATIONS
from ..queue import deadletters, keys
from ..queue.connect import configuration_problem, connector, redis_url
from ..queue.lists import Queue
from .options import non_negative_int, positive_float, positive_int


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"gpu-image-worker {prog}", description=description)
    p.add_argument("-redis", "--redis", metavar="ADDR", help="Redis address or URL (as for the worker; env too)")
    p.add_argument("-db", "--db", type=non_negative_int, help="Redis database number")
    return p


def _connect(args: argparse.Namespace) -> redis.Redis:
    """The connection, or exit 2 on settings that cannot work (an outage is
    left to the command: it reports the error it meets)."""
    try:
        conn = connector(redis_url(args.redis, args.db, os.environ), 2.0)()
    except ValueError as e:
        problem: str | None = str(e)
    else:
        problem = configuration_problem(conn)
    if problem:
        print(f"gpu-image-worker: error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    return conn


def stats_main(argv: Sequence[str]) -> int:
    p = _parser("stats", "Queue lengths, jobs in flight, live workers and the oldest pending job's age.")
    p.add_argument("--json", action="store_true", help="one JSON object per report")
    p.add_argument("--watch", type=positive_float, metavar="SECONDS", help="report again every SECONDS")
    args = p.parse_args(argv)
    conn = _connect(args)
    while True:
        try:
            s = Queue(conn).stats()
        except redis.RedisError as e:
            print(f"gpu-image-worker stats: Redis error: {e}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(s), flush=True)
        else:
            if args.watch:
                print("\033[H\033[2J", end="")
            age = "-" if s["oldestPendingAgeSeconds"] is None else f"{s['oldestPendingAgeSeconds']:.1f}s"
            print(
                f"image:jobs    {s['jobs']:>8}   oldest pending: {age}\n"
                f"image:retry   {s['retry']:>8}\nimage:failed  {s['failed']:>8}\nimage:done    {s['done']:>8}\n"
                f"in flight     {s['inFlight']:>8}\nlive workers  {s['liveWorkers']:>8}"
                f"   (registered: {s['registeredWorkers']})",
                flush=True,
            )
        if not args.watch:
            return 0
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0


def requeue_main(argv: Sequence[str]) -> int:
    p = _parser(
        "requeue-failed",
        "Move dead letters from image:failed back to image:jobs, oldest first, "
        "with retryCount reset to 0. Records of payloads that were not jobs are left alone.",
    )
    p.add_argument("--reason", help="only records with this reason (e.g. input-missing)")
    p.add_argument("--limit", type=positive_int, help="move at most this many")
    args = p.parse_args(argv)
    conn = _connect(args)
    try:
        done = deadletters.requeue(conn, args.reason, args.limit)
    except redis.RedisError as e:
        print(f"gpu-image-worker requeue-failed: Redis error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gpu-image-worker requeue-failed: interrupted; records not moved stay on image:failed", file=sys.stderr)
        return 130
    skipped = f"; left {done.not_jobs} record(s) that are not jobs" if done.not_jobs else ""
    print(f"requeued {done.moved} job(s){skipped}")
    return 0


def _purge(argv: Sequence[str], key: str, name: str, ask: bool) -> int:
    p = _parser(name, f"Delete records from {key}.")
    p.add_argument("--keep", type=non_negative_int, default=0, metavar="N", help="keep the newest N (default 0)")
    if ask:
        p.add_argument(
            "-y",
            "--yes",
            action="store_true",
            help="delete every record without asking (without --keep, and without this flag, "
            "the command asks on a terminal and refuses elsewhere)",
        )
    args = p.parse_args(argv)
    conn = _connect(args)
    if ask and not args.keep and not args.yes:
        refused = _refused(conn, key, name)
        if refused:
            return refused
    print(f"deleted {deadletters.purge(conn, key, args.keep)} record(s) from {key}")
    return 0


def _refused(conn: redis.Redis, key: str, name: str) -> int:
    """Before every record of ``key`` goes: 0 when a person on a terminal said
    yes (or there is nothing to delete), 1 when they said no, 2 when there is
    no terminal to ask on."""
    count = conn.llen(key)
    if not count:
        return 0
    if not sys.stdin.isatty():
        print(
            f"gpu-image-worker {name}: not deleting all {count} record(s) of {key} without confirmation: "
            "pass --yes (or --keep N)",
            file=sys.stderr,
        )
        return 2
    try:
        answer = input(f"Delete all {count} record(s) of {key}? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return 0
    print("nothing deleted")
    return 1


def purge_done_main(argv: Sequence[str]) -> int:
    return _purge(argv, keys.DONE, "purge-done", ask=False)


def purge_failed_main(argv: Sequence[str]) -> int:
    return _purge(argv, keys.FAILED, "purge-failed", ask=True)


def submit_main(argv: Sequence[str]) -> int:
    from ..producer import Producer, detect_image_type, store_upload

    p = _parser(
        "submit",
        "Queue image jobs for files, as the seed's server does on upload. A file "
        "outside <uploads-root>/<user>/ is first stored there as <uuid>-<name>.",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--uploads-root", required=True, metavar="DIR")
    p.add_argument("--user", required=True, metavar="ID")
    p.add_argument("--ops", default=",".join(OPERATIONS), help="comma-separated operations")
    args = p.parse_args(argv)
    producer = Producer(_connect(args))
    ops = [o for o in args.ops.split(",") if o]
    user_dir = (Path(args.uploads_root) / args.user).resolve()
    failed: list[str] = []
    for f in args.files:
        path = Path(f).resolve()
        try:
            with open(path, "rb") as fh:
                is_image = detect_image_type(fh.read(4096)) is not None
        except OSError as e:
            is_image = False
            print(f"cannot read {f}: {e}", file=sys.stderr)
        if not is_image:
            failed.append(f)
            print(f"not queued: {f} is not an image", file=sys.stderr)
            continue
        if path.parent != user_dir:
            path = store_upload(path, args.uploads_root, args.user, path.name)
        job = producer.enqueue(path, args.user, args.uploads_root, ops)
        if job is None:
            failed.append(f)
            print(f"not queued: {f} (Redis unavailable)", file=sys.stderr)
        else:
            print(f"queued {job['jobId']}")
    return 1 if failed else 0
