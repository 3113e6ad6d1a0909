"""Every Redis key the worker touches. Producers, the worker and the tools
import their names from here and nowhere else. All start with PREFIX, the
seed's namespace, so an ACL rule ``~image:*`` covers them."""

PREFIX = "image:"

JOBS = PREFIX + "jobs"  # pending jobs: producers RPUSH, workers take from the left (FIFO)
RETRY = PREFIX + "retry"  # jobs waiting for their next attempt (a list, so LLEN works)
RETRY_DUE = PREFIX + "retry:due"  # the same entries, scored by due time in ms
DONE = PREFIX + "done"  # outcome records, newest first, capped
FAILED = PREFIX + "failed"  # dead letters, newest first, capped
WORKERS = PREFIX + "workers"  # ids of registered worker slots
EVENTS = PREFIX + "events"  # pub/sub channel: one JSON message per state change
STATUS_TTL_S = 7 * 24 * 3600  # a status hash outlives its job by a week, then expires


def processing(worker_id: str) -> str:
    """In-flight list of one worker slot: the job it holds, until its outcome is recorded."""
    return f"{PREFIX}processing:{worker_id}"


def heartbeat(worker_id: str) -> str:
    """Lease of one worker slot; expires when its process stops refreshing it."""
    return f"{PREFIX}heartbeat:{worker_id}"


def last_outcome(worker_id: str) -> str:
    """Token of the last attempt a slot recorded: tells a retried record call
    whose first reply was lost that it had in fact gone through."""
    return f"{PREFIX}last-outcome:{worker_id}"


def status(job_id: str) -> str:
    """Hash with the job's current state, readable by jobId (see docs/operations.md)."""
    return f"{PREFIX}status:{job_id}"


def failed_kept(run: str) -> str:
    """Dead letters one requeue-failed run set aside, in their order, to go back
    to the tail of image:failed when the run ends (or when the next run starts,
    after a run that was killed)."""
    return f"{FAILED}:kept:{run}"
