"""How a job can fail, and what happens to it then.

``reason`` is a short machine-readable word stored in the failure record;
the message is for people."""

from __future__ import annotations

import errno


class JobError(Exception):
    """A job failed. ``retry`` says whether a later attempt could succeed;
    ``resource`` that the machine ran out of something (disk space, file
    descriptors, memory), which is retried without using up an attempt."""

    retry = False
    resource = False

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidJob(JobError):
    """The payload is not a job we accept: failed at once, never retried."""

    def __init__(self, message: str, reason: str = "invalid-job") -> None:
        super().__init__(reason, message)


class PermanentError(JobError):
    """The job is well-formed but cannot succeed later (unsupported format, too large)."""


class TransientError(JobError):
    """May succeed later (missing file, I/O error, GPU error): retried with backoff."""

    retry = True


class ResourceExhausted(TransientError):
    """The machine ran out of disk space, file descriptors or memory: not the
    job's fault, so retried with backoff and never counted as an attempt."""

    resource = True


# errno values that mean the machine, not the job, is out of something.
RESOURCE_ERRNOS = {
    errno.ENOSPC: "no-space",
    errno.EDQUOT: "no-space",
    errno.EMFILE: "too-many-files",
    errno.ENFILE: "too-many-files",
    errno.ENOMEM: "out-of-memory",
}


def io_error(what: str, e: OSError) -> TransientError:
    """The error for an OSError while reading or writing a job's files."""
    reason = RESOURCE_ERRNOS.get(e.errno or 0)
    if reason:
        return ResourceExhausted(reason, f"{what}: {e}")
    return TransientError("io-error", f"{what}: {e}")
