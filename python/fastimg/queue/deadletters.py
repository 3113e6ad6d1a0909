"""The operator's moves on the record lists: dead letters back to image:jobs,
records deleted. Each is done in short steps, so that a list of 100,000
records never holds Redis for long: no step touches more than one block of
records, and no step scans the list."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis

from . import keys
from .outcomes import RECORD_FIELDS
from .wire import dumps, text

# Move the oldest block of dead letters: the tail of image:failed, if it is
# still what the caller read (it changes when a worker trims the list to its
# cap, or another tool runs). Each record either goes back to image:jobs as
# its job, or waits in the run's side list, which goes back to the tail of
# image:failed when the run ends (:func:`restore`): the records kept stay in
# their order, older than every record still on the list.
#   KEYS: failed, jobs, side list   ARGV: n, then n (record, job or '') pairs, oldest first
# Returns the jobs moved, or -1 when the tail was not what the caller read.
_MOVE_OLDEST = """
local n = tonumber(ARGV[1])
local tail = redis.call('LRANGE', KEYS[1], -n, -1)
if #tail ~= n then return -1 end
for i = 1, n do
  if tail[n - i + 1] ~= ARGV[2 * i] then return -1 end
end
redis.call('LTRIM', KEYS[1], 0, -n - 1)
local moved = 0
for i = 1, n do
  local job = ARGV[2 * i + 1]
  if job ~= '' then
    redis.call('RPUSH', KEYS[2], job)
    moved = moved + 1
  else
    redis.call('LPUSH', KEYS[3], ARGV[2 * i])
  end
end
return moved
"""

# Put up to ARGV[1] records of a side list back at the tail of image:failed,
# newest first (the side list holds them newest first).   KEYS: side list, failed
_RESTORE = """
local moved = 0
for _ = 1, tonumber(ARGV[1]) do
  if not redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') then break end
  moved = moved + 1
end
return moved
"""

# Delete up to ARGV[2] of the oldest records while more than ARGV[1] remain.
#   KEYS: list   Returns the records deleted.
_TRIM_OLDEST = """
local excess = redis.call('LLEN', KEYS[1]) - tonumber(ARGV[1])
if excess <= 0 then return 0 end
local n = math.min(excess, tonumber(ARGV[2]))
redis.call('LTRIM', KEYS[1], 0, -n - 1)
return n
"""

BLOCK = 100  # records per step: well under a millisecond of Redis time each
MOVE, KEEP, NOT_A_JOB = "move", "keep", "not-a-job"


@dataclass
class Requeued:
    moved: int = 0
    not_jobs: int = 0  # records of payloads that were never jobs (left where they are)


def decide(record: bytes, reason: str | None) -> tuple[str, bytes]:
    """What becomes of one dead letter: ("move", its job as it goes back: its
    own fields, ``retryCount`` 0), ("keep", b"") when another ``reason`` was
    asked for, ("not-a-job", b"") for a record of a payload that never was one."""
    try:
        fields = json.loads(record)
    except (ValueError, RecursionError):
        return NOT_A_JOB, b""
    if not isinstance(fields, dict):
        return NOT_A_JOB, b""
    if reason and fields.get("reason") != reason:
        return KEEP, b""
    if "raw" in fields or "jobId" not in fields:
        return NOT_A_JOB, b""
    job = {k: v for k, v in fields.items() if k not in RECORD_FIELDS}
    job["retryCount"] = 0
    return MOVE, dumps(job).encode()


def requeue(conn: redis.Redis, reason: str | None = None, limit: int | None = None) -> Requeued:
    """Move dead letters back to the tail of image:jobs, oldest first, at most
    ``limit``, only those with ``reason`` when given. Records that arrive
    while this runs are left for the next run. Interrupted (a signal, Redis
    gone), the records it set aside go back to image:failed on the way out,
    or, if even that fails, at the start of the next run."""
    side = keys.failed_kept(secrets.token_hex(6))
    move = conn.register_script(_MOVE_OLDEST)
    done = Requeued()
    restore_leftovers(conn)
    try:
        budget = int(conn.llen(keys.FAILED))
        while budget > 0 and (limit is None or done.moved < limit):
            block = list(reversed(cast(list[bytes], conn.lrange(keys.FAILED, -min(BLOCK, budget), -1))))
            if not block:
                break
            args: list[bytes | int] = []
            moving = not_jobs = 0
            for record in block:
                if limit is not None and done.moved + moving >= limit:
                    break
                what, job = decide(record, reason)
                not_jobs += what == NOT_A_JOB
                moving += what == MOVE
                args += [record, job]
            n = len(args) // 2
            moved = int(move(keys=[keys.FAILED, keys.JOBS, side], args=[n, *args]))
            if moved < 0:
                continue  # the tail changed under us: read it again
            done.moved += moved
            done.not_jobs += not_jobs
            budget -= n
    finally:
        restore(conn, side)
    return done


def restore(conn: redis.Redis, side: str) -> int:
    """Put the records of a side list back at the tail of image:failed."""
    script = conn.register_script(_RESTORE)
    total = 0
    while moved := int(script(keys=[side, keys.FAILED], args=[BLOCK])):
        total += moved
    return total


def restore_leftovers(conn: redis.Redis) -> int:
    """Side lists a killed run left behind go back to image:failed."""
    return sum(restore(conn, text(k)) for k in conn.scan_iter(match=keys.failed_kept("*"), count=1000))


def purge(conn: redis.Redis, key: str, keep: int, step: int = 10_000) -> int:
    """Delete the records of ``key`` but the newest ``keep``; returns how many.
    All of them: one UNLINK, which frees the list in the background; some of
    them: ``step`` at a time from the oldest end."""
    if keep == 0:
        pipe = conn.pipeline(transaction=True)
        pipe.llen(key)
        pipe.unlink(key)
        return int(pipe.execute()[0])
    trim: Callable[..., Any] = conn.register_script(_TRIM_OLDEST)
    total = 0
    while n := int(trim(keys=[key], args=[keep, step])):
        total += n
    return total
