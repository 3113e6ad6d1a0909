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
from ..queue import keys
from ..queue.connect import connector, redis_url
from ..queue.lists import Queue
from ..queue.outcomes import RECORD_FIELDS
from .options import non_negative_int, positive_float, positive_int


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"gpu-image-worker {prog}", description=description)
    p.add_argument("-redis", "--redis", metavar="ADDR", help="Redis address or URL (as for the worker; env too)")
    p.add_argument("-db", "--db", type=non_negative_int, help="Redis database number")
    return p


def _connect(args: argparse.Namespace) -> redis.Redis:
    return connector(redis_url(args.redis, args.db, os.environ), 2.0)()


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
    queue = Queue(conn)
    moved = skipped = 0
    for record in reversed(conn.lrange(keys.FAILED, 0, -1)):  # the list is newest first
        if args.limit is not None and moved >= args.limit:
            break
        try:
            fields = json.loads(record)
        except ValueError:
            skipped += 1
            continue
        if args.reason and fields.get("reason") != args.reason:
            continue
        if "raw" in fields or "jobId" not in fields:
            skipped += 1
            continue
        job = {k: v for k, v in fields.items() if k not in RECORD_FIELDS}
        job["retryCount"] = 0
        moved += queue.requeue(record, job)
    print(f"requeued {moved} job(s)" + (f"; left {skipped} record(s) that are not jobs" if skipped else ""))
    return 0


def _purge(argv: Sequence[str], key: str, name: str) -> int:
    p = _parser(name, f"Delete records from {key}.")
    p.add_argument("--keep", type=non_negative_int, default=0, metavar="N", help="keep the newest N (default 0)")
    args = p.parse_args(argv)
    conn = _connect(args)
    before = conn.llen(key)
    if args.keep:
        conn.ltrim(key, 0, args.keep - 1)
    else:
        conn.delete(key)
    print(f"deleted {max(0, before - args.keep)} record(s) from {key}")
    return 0


def purge_done_main(argv: Sequence[str]) -> int:
    return _purge(argv, keys.DONE, "purge-done")


def purge_failed_main(argv: Sequence[str]) -> int:
    return _purge(argv, keys.FAILED, "purge-failed")


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
