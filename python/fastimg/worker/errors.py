"""How a job can fail, and what happens to it then.

``reason`` is a short machine-readable word stored in the failure record;
the message is for people."""

from __future__ import annotations


class JobError(Exception):
    """A job failed. ``retry`` says whether a later attempt could succeed."""

    retry = False

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
