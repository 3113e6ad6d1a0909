"""Encoding each output as WebP and putting a job's outputs in place together.

Every output is written to a temporary file in the output directory (through
a descriptor of that directory, so a symlink swapped into the path cannot
redirect it), flushed to disk, and only when all of them exist are they
renamed into place, under an exclusive lock on the directory: a reader, or a
second job with the same jobId, sees one whole set or the other, never a mix.
A job that fails before that leaves nothing behind."""

from __future__ import annotations

import fcntl
import io
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, WebPImagePlugin  # noqa: F401 - see encode_webp

from .confine import open_dir
from .errors import PermanentError, io_error
from .job import Job
from .spec import OutputSpec


@dataclass
class Output:
    operation: str
    path: str
    bytes: int
    width: int
    height: int


def encode_webp(pixels: np.ndarray, s: OutputSpec) -> bytes:
    # WebP's plugin is imported above: saving in a format Pillow has not
    # loaded makes it import every plugin it has, which costs a process as
    # short as `gpu-image-worker process one.jpg` a third of its start-up.
    buf = io.BytesIO()
    # Built from bare pixels, so no metadata (EXIF, ICC, XMP) is carried over.
    Image.fromarray(pixels).save(buf, "WEBP", quality=s.quality, method=s.method)
    return buf.getvalue()


class Superseded(Exception):
    """The job is no longer this worker's (its lease lapsed and another worker
    took it over): its outputs were discarded, not put in place."""


class Stopped(Exception):
    """The writer was closed by a hard stop; nothing more is put in place."""


def _temp_prefix(name: str) -> str:
    return f".{name}."


class Writer:
    """Puts jobs' outputs in place; one per worker process. :meth:`close` (on a
    hard stop) removes every temporary file being written and lets no output
    land afterwards, so a job that was put back leaves no trace."""

    def __init__(self, durable: bool = True) -> None:
        self.durable = durable  # fsync files and directory before a job counts as done
        self._lock = threading.Lock()
        self._closed = False
        self._temps: set[tuple[int, str]] = set()  # (dir fd, name) being written

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for dir_fd, name in list(self._temps):
                _unlink(name, dir_fd)
            self._temps.clear()

    def open(self, job: Job, remove_stale: bool = False) -> OutputDir:
        """The job's output directory, created when missing. With
        ``remove_stale``, the temporary files of this job that exist already
        (left by an attempt that was killed) are removed first."""
        root, rel = job.output_at if job.output_at else (None, "")
        try:
            fd = open_dir(job.output_dir, root, rel, create=True)
        except (FileExistsError, NotADirectoryError):
            raise PermanentError("not-a-directory", f"outputDir is not a directory: {job.output_dir}") from None
        except OSError as e:
            raise io_error("cannot create outputDir", e) from None
        if remove_stale:
            _remove_stale(fd, job.job_id)
        return OutputDir(self, job, fd)


def remove_stale_temps(job: Job) -> None:
    """Remove this job's temporary files, if its output directory exists: what
    an attempt killed mid-write left. (A second job with the same jobId in
    flight at that moment loses its own, and is retried as an io-error.)"""
    root, rel = job.output_at if job.output_at else (None, "")
    try:
        fd = open_dir(job.output_dir, root, rel, create=False)
    except (OSError, PermanentError):
        return
    try:
        _remove_stale(fd, job.job_id)
    finally:
        os.close(fd)


def _remove_stale(dir_fd: int, job_id: str) -> None:
    prefix = f".{job_id}_"
    try:
        with os.scandir(dir_fd) as entries:
            for e in entries:
                if e.name.startswith(prefix) and e.name.endswith(".tmp"):
                    _unlink(e.name, dir_fd)
    except OSError:
        pass  # a stale file left is untidy, not wrong


def _unlink(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


class OutputDir:
    def __init__(self, writer: Writer, job: Job, fd: int) -> None:
        self.writer, self.job, self.fd = writer, job, fd
        self.temps: list[tuple[str, str]] = []  # (temporary name, final name)
        self._lock = threading.Lock()

    def __enter__(self) -> OutputDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()
        os.close(self.fd)

    def write_temp(self, name: str, data: bytes) -> None:
        """Write ``data`` for the output ``name`` to a temporary file (safe from any thread)."""
        w = self.writer
        tmp = f"{_temp_prefix(name)}{secrets.token_hex(4)}.tmp"
        with w._lock:
            if w._closed:
                raise Stopped()
            try:
                fd = os.open(
                    tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=self.fd
                )
            except OSError as e:
                raise io_error("cannot write output", e) from None
            w._temps.add((self.fd, tmp))
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o644)  # readable by the web server whatever the umask
                f.write(data)
                if w.durable:
                    f.flush()
                    os.fsync(f.fileno())
        except OSError as e:
            self._forget(tmp)
            raise io_error("cannot write output", e) from None
        with self._lock:
            self.temps.append((tmp, name))

    def _forget(self, tmp: str) -> None:
        with self.writer._lock:
            self.writer._temps.discard((self.fd, tmp))
        _unlink(tmp, self.fd)

    def commit(self, still_ours: Callable[[], bool] | None = None) -> None:
        """Rename every temporary file into place at once. ``still_ours`` is
        asked under the directory's lock, just before: False discards the
        outputs and raises Superseded."""
        w = self.writer
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as e:
            raise io_error("cannot lock outputDir", e) from None
        try:
            if still_ours is not None and not still_ours():
                raise Superseded()
            with w._lock:  # close() cannot run between the check and the renames
                if w._closed:
                    raise Stopped()
                try:
                    for tmp, name in self.temps:
                        os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
                        w._temps.discard((self.fd, tmp))
                except OSError as e:
                    raise io_error("cannot write output", e) from None
            self.temps = []
            if w.durable:
                try:
                    os.fsync(self.fd)
                except OSError as e:
                    raise io_error("cannot flush outputDir", e) from None
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def discard(self) -> None:
        for tmp, _ in self.temps:
            self._forget(tmp)
        self.temps = []


def encode_and_write(out: OutputDir, op: str, pixels: np.ndarray, s: OutputSpec) -> tuple[Output, float, float]:
    """Encode one output and write it to its temporary file; the Output names
    the path it will have once the job's outputs are committed."""
    t0 = time.perf_counter()
    encoded = encode_webp(pixels, s)
    t1 = time.perf_counter()
    name = f"{out.job.job_id}_{op}.webp"
    out.write_temp(name, encoded)
    t2 = time.perf_counter()
    h, w = pixels.shape[:2]
    return Output(op, os.path.join(out.job.output_dir, name), len(encoded), w, h), (t1 - t0) * 1000, (t2 - t1) * 1000
