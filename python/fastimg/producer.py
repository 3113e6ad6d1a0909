"""The producer side of the queue, for servers written in Python: what the
seed's Node.js server does on upload.

    from fastimg.producer import Producer, store_upload
    path = store_upload(request_file, uploads_root="/srv/uploads", user_id="u42", filename="cat.jpg")
    Producer.from_url("redis://localhost:6379/0").enqueue(path, user_id="u42", uploads_root="/srv/uploads")

An upload never fails because of the queue: when Redis cannot be reached,
``enqueue`` logs a warning and returns None.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import redis

from .image.sniff import IMAGE_TYPES, detect_image_type
from .image.spec import OPERATIONS
from .queue import keys, status
from .queue.address import Acks, NotAcknowledged, acknowledged, parse
from .queue.connect import client, follow_primary
from .queue.wire import dumps

__all__ = ["IMAGE_TYPES", "Producer", "build_job", "detect_image_type", "store_upload"]

log = logging.getLogger("fastimg.producer")

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]")
# Characters of the client's file name kept (its extension first): with the
# uuid, the stored name, the job id and its outputs' names stay well inside
# the 255 bytes of a file name and the 200 of a job id.
_MAX_NAME = 120


def store_upload(
    source: bytes | BinaryIO | str | os.PathLike[str],
    uploads_root: str | os.PathLike[str],
    user_id: str,
    filename: str,
) -> Path:
    """Save an upload as ``<uploads_root>/<user_id>/<uuid>-<filename>`` (the seed's
    naming) and return its absolute path. ``source`` is bytes, a readable binary
    file or a path to copy. The file name is reduced to its base name and safe
    characters; the user id must be a plain directory name."""
    if not user_id or _UNSAFE_NAME.search(user_id) or user_id in (".", ".."):
        raise ValueError(f"user_id {user_id!r} is not a safe directory name")
    base = _UNSAFE_NAME.sub("_", os.path.basename(filename)).strip() or "upload"
    if len(base) > _MAX_NAME:
        stem, ext = os.path.splitext(base)
        base = stem[: _MAX_NAME - len(ext[:16])] + ext[:16]
    directory = Path(uploads_root).resolve() / user_id
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{uuid.uuid4()}-{base}"
    # Written under a hidden name and renamed: a failure part-way leaves no
    # partial upload under the name a job would read.
    partial = directory / f".{target.name}.part"
    try:
        if isinstance(source, bytes):
            partial.write_bytes(source)
        elif isinstance(source, (str, os.PathLike)):
            shutil.copyfile(source, partial)
        else:
            with open(partial, "wb") as f:
                shutil.copyfileobj(source, f)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target


def build_job(
    path: str | os.PathLike[str],
    user_id: str,
    uploads_root: str | os.PathLike[str],
    operations: Sequence[str] = OPERATIONS,
) -> dict[str, object]:
    """The job exactly as the seed's server builds it for a stored upload."""
    path = Path(path).resolve()
    return {
        "jobId": os.path.splitext(path.name)[0],
        "inputPath": str(path),
        "outputDir": str(Path(uploads_root).resolve() / user_id / "processed"),
        "operations": list(operations),
        "timestamp": int(time.time() * 1000),
        "retryCount": 0,
    }


class Producer:
    """Queues image jobs; never raises because of Redis. With ``acks``, a job
    counts as queued only once that many replicas have it (see
    docs/operations.md, High availability)."""

    def __init__(self, conn: redis.Redis, acks: Acks | None = None) -> None:
        self.conn = conn
        self.acks = acks or Acks()
        self._next_follow = 0.0

    @classmethod
    def from_url(cls, url: str) -> Producer:
        """For any URL the worker takes (``redis+sentinel://`` too); its
        ``wait_replicas`` and ``wait_timeout_ms`` become ``acks``."""
        return cls(client(url, socket_timeout=5, socket_connect_timeout=5), parse(url).acks)

    def enqueue(
        self,
        path: str | os.PathLike[str],
        user_id: str,
        uploads_root: str | os.PathLike[str],
        operations: Sequence[str] = OPERATIONS,
        params: dict[str, object] | None = None,
    ) -> dict[str, object] | None:
        """Queue the stored upload at ``path`` when it is an image; return the job,
        or None when it is not an image, Redis is unavailable, or (with
        ``acks``) too few replicas confirmed it in time (logged: such a job
        was queued on the primary and runs unless the primary fails first)."""
        try:
            with open(path, "rb") as f:
                kind = detect_image_type(f.read(4096))
        except OSError as e:
            log.error("Failed to read upload for image processing: %s", e)
            return None
        if kind is None:
            return None
        job = build_job(path, user_id, uploads_root, operations)
        if params:
            job["params"] = params
        try:
            self.push(job)
        except NotAcknowledged as e:
            log.warning("Image processing job %s queued but not confirmed (%s); it may be lost", job["jobId"], e)
            return None
        except redis.RedisError as e:
            log.warning("Redis not available - skipping image processing job for %s: %s", path, e)
            return None
        log.info("Image processing job sent to queue: %s (%s, user %s)", job["jobId"], kind, user_id)
        return job

    def push(self, job: dict[str, object]) -> None:
        """Queue ``job`` (as build_job makes it) with its status set to queued,
        in one transaction; with ``acks``, WAIT for the replicas after it on
        the same connection. Raises redis.RedisError, which says why (a server
        that is down, one that refuses writes, as MISCONF for a full disk, or
        NotAcknowledged when too few replicas have it: the job may then be
        lost in a failover)."""
        operations = job["operations"]
        assert isinstance(operations, list)
        if time.monotonic() >= self._next_follow:  # at most once a second, one caller at a time
            self._next_follow = time.monotonic() + 1.0
            follow_primary([self.conn])
        pipe = self.conn.pipeline(transaction=not self.acks.replicas)
        if self.acks.replicas:
            pipe.execute_command("MULTI")  # type: ignore[no-untyped-call]
        status.stage(pipe, str(job["jobId"]), "queued", operations=operations)
        pipe.rpush(keys.JOBS, dumps(job))
        if self.acks.replicas:
            pipe.execute_command("EXEC")  # type: ignore[no-untyped-call]
            pipe.execute_command("WAIT", self.acks.replicas, self.acks.timeout_ms)  # type: ignore[no-untyped-call]
        replies = pipe.execute()
        if self.acks.replicas:
            acknowledged(self.acks, int(replies[-1]))
