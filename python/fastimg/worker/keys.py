"""Every Redis key the worker touches. Producers, the worker and the tools
import their names from here and nowhere else."""

PREFIX = "image:"

JOBS = "image:jobs"  # pending jobs: producers RPUSH, workers take from the left (FIFO)
RETRY = "image:retry"  # jobs waiting for their next attempt (a list, so LLEN works)
RETRY_DUE = "image:retry:due"  # the same entries, scored by due time in ms
DONE = "image:done"  # outcome records, newest first, capped
FAILED = "image:failed"  # dead letters, newest first, capped
WORKERS = "image:workers"  # ids of registered worker slots


def processing(worker_id: str) -> str:
    """In-flight list of one worker slot: the job it holds, until its outcome is recorded."""
    return f"image:processing:{worker_id}"


def last_outcome(worker_id: str) -> str:
    """Token of the last attempt a slot recorded: tells a retried record call
    whose first reply was lost that it had in fact gone through."""
    return f"image:last-outcome:{worker_id}"


def heartbeat(worker_id: str) -> str:
    """Lease of one worker slot; expires when its process stops refreshing it."""
    return f"image:heartbeat:{worker_id}"

EVENTS = "image:events"  # pub/sub channel: one JSON message per state change
STATUS_TTL_S = 7 * 24 * 3600  # a status hash outlives its job by a week, then expires


def status(job_id: str) -> str:
    """Hash with the job's current state, readable by jobId (see docs/operations.md)."""
    return f"image:status:{job_id}"
