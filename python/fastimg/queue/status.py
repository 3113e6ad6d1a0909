"""Job status for servers and browsers: a hash per job (``image:status:<jobId>``)
and one message on ``image:events`` per change.

Best effort by design: the queue lists are the record of truth, so a status
write that fails is logged and never fails or delays the job."""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from redis.client import Pipeline

from . import keys
from .wire import dumps, now_ms, text

log = logging.getLogger("fastimg.worker")


def stage(pipe: Pipeline, job_id: str, state: str, **fields: Any) -> None:
    """Add to ``pipe`` the commands that set the job's status to ``state``
    (queued, processing, retrying, done, failed) with ``fields`` and announce
    it: a producer sends them in the same transaction as its RPUSH, so no
    worker's update can come before ``queued``."""
    now = now_ms()
    flat: dict[str, str] = {"jobId": job_id, "state": state, "updatedAt": str(now)}
    for k, v in fields.items():
        flat[k] = v if isinstance(v, str) else dumps(v)
    if state in ("queued", "processing"):
        # A new attempt starts a new story: drop the last attempt's fields.
        pipe.delete(keys.status(job_id))
    pipe.hset(keys.status(job_id), mapping=flat)  # type: ignore[arg-type]  # redis-py's Mapping is invariant
    pipe.expire(keys.status(job_id), keys.STATUS_TTL_S)
    pipe.publish(keys.EVENTS, dumps({"jobId": job_id, "state": state, "at": now, **fields}))


def publish(conn: redis.Redis, job_id: str, state: str, **fields: Any) -> None:
    """Set the job's status and announce it, best effort (see :func:`stage`)."""
    try:
        pipe = conn.pipeline(transaction=True)
        stage(pipe, job_id, state, **fields)
        pipe.execute()
    except (redis.RedisError, ValueError) as e:  # ValueError: a key Redis cannot encode
        log.warning("status update for %s (%s) not written: %s", job_id, state, e)


def read(conn: redis.Redis, job_id: str) -> dict[str, Any]:
    """The status hash of ``job_id`` with JSON fields decoded; {} when unknown or expired."""
    out: dict[str, Any] = {}
    for k, v in conn.hgetall(keys.status(job_id)).items():
        key, value = text(k), text(v)
        try:
            out[key] = json.loads(value) if key not in ("jobId", "state") else value
        except ValueError:
            out[key] = value
    return out
