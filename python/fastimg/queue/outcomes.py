"""What happens to a job after an attempt, decided and written down in one
place: the retry decision, its backoff, and the shape of every record that
lands on image:done, image:retry or image:failed."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from ..image.errors import JobError
from ..image.job import Job
from .wire import StrictJSONError, loads, now_ms

# Fields the worker adds to a job's own; requeue-failed removes them again.
RECORD_FIELDS = (
    "status",
    "error",
    "reason",
    "attempts",
    "worker",
    "failedAt",
    "lastError",
    "lastReason",
    "nextAttemptAt",
    "outputs",
    "timings",
    "completedAt",
    "inputBytes",
    "resourceRetries",
    "raw",
    "rawBytes",
    "rawSha256",
    "damaged",
)

# Of a payload that is not a job, at most this much is kept in its record
# (escaped), with its length and hash: enough to find and read it, never a
# record as large as whatever was pushed.
RAW_KEEP = 16 * 1024


def retry_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(attempt-1))],
    never below a tenth of that bound (so a retry is never immediate)."""
    bound = min(cap, base * (2 ** max(0, attempt - 1)))
    return random.uniform(bound / 10, bound)


@dataclass(frozen=True)
class Policy:
    max_retries: int = 3
    backoff_base: float = 1.0
    backoff_cap: float = 300.0


@dataclass
class Outcome:
    """Where an attempt's job goes: ``list`` is "done", "retry" or "failed";
    ``record`` is what lands there; ``due_ms`` is set for a retry."""

    list: str
    record: dict[str, Any]
    message: str  # the log line's text, without the slot's name
    due_ms: int | None = None

    def status(self) -> tuple[str, dict[str, Any]]:
        """The job's status after this outcome, and the fields that go with it
        (docs/operations.md)."""
        r = self.record
        if self.list == "done":
            damaged = {"damaged": r["damaged"]} if "damaged" in r else {}
            return "done", {"outputs": r["outputs"], "attempts": r["attempts"], **damaged}
        if self.list == "retry":
            return "retrying", {
                "reason": r["lastReason"],
                "error": r["lastError"],
                "attempt": r.get("retryCount", 0),
                "nextAttemptAt": self.due_ms,
            }
        return "failed", {"reason": r["reason"], "error": r["error"], "attempts": r["attempts"]}


def done(
    job: Job,
    outputs: list[dict[str, Any]],
    timings: dict[str, float],
    input_bytes: int,
    worker: str,
    damage: str | None = None,
) -> Outcome:
    """``damage``: the outputs were made from a partial image (keepPartial), for this reason."""
    record = dict(job.fields)
    if damage:
        record["damaged"] = damage
    record.update(
        status="done",
        outputs=outputs,
        timings=timings,
        inputBytes=input_bytes,
        worker=worker,
        attempts=job.retry_count + 1,
        completedAt=now_ms(),
    )
    kept = f" from a damaged image ({damage})" if damage else ""
    return Outcome("done", record, f"Job {job.job_id} completed successfully in {timings.get('total', 0):.0f}ms{kept}")


def after_error(job: Job, error: JobError, worker: str, policy: Policy) -> Outcome:
    """Retry or dead letter. A job that met exhausted resources (no space, no
    file descriptors, no memory) is retried without using up an attempt: the
    fault is the machine's, and a good job must not die of it."""
    attempt = job.retry_count + 1
    if error.retry and (error.resource or job.retry_count < policy.max_retries):
        payload = dict(job.fields)
        if error.resource:
            count = payload.get("resourceRetries", 0)
            count = (count if isinstance(count, int) and not isinstance(count, bool) else 0) + 1
            payload["resourceRetries"] = count
            delay = retry_delay(count, policy.backoff_base, policy.backoff_cap)
            what = f"retry in {delay:.1f}s (resources, not counted as an attempt)"
        else:
            payload["retryCount"] = attempt
            delay = retry_delay(attempt, policy.backoff_base, policy.backoff_cap)
            what = f"retry {attempt}/{policy.max_retries} in {delay:.1f}s"
        due = now_ms() + int(delay * 1000)
        payload.update(lastError=str(error), lastReason=error.reason, nextAttemptAt=due)
        return Outcome("retry", payload, f"Job {job.job_id} failed ({error.reason}: {error}); {what}", due)
    why = "permanently" if not error.retry else f"after {attempt} attempts"
    record = dict(job.fields)
    record.update(
        status="failed", error=str(error), reason=error.reason, attempts=attempt, worker=worker, failedAt=now_ms()
    )
    return Outcome("failed", record, f"Job {job.job_id} failed {why} ({error.reason}): {error}")


def _raw_fields(raw: bytes) -> dict[str, Any]:
    """The payload's own fields when it is a small JSON object, else the
    payload itself, escaped and capped, with its length and hash."""
    if len(raw) <= RAW_KEEP:
        try:
            parsed = loads(raw.decode("utf-8", "strict"))
        except (StrictJSONError, ValueError):
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    return {
        "raw": raw[:RAW_KEEP].decode("utf-8", "backslashreplace"),
        "rawBytes": len(raw),
        "rawSha256": hashlib.sha256(raw).hexdigest(),
    }


def invalid(raw: bytes, error: JobError, worker: str) -> Outcome:
    """A payload that is not a job we accept: straight to image:failed."""
    record = _raw_fields(raw)
    record.update(status="failed", error=str(error), reason=error.reason, attempts=1, worker=worker, failedAt=now_ms())
    return Outcome("failed", record, f"Invalid job moved to image:failed ({error.reason}): {error}")


def unhandled(raw: bytes, error: JobError, worker: str) -> Outcome:
    """A payload whose handling raised where nothing should (a bug): failed,
    with the payload kept as for an invalid one."""
    outcome = invalid(raw, error, worker)
    outcome.message = f"Job {outcome.record.get('jobId', '(no jobId)')} failed ({error.reason}): {error}"
    return outcome


def recovered(raw: bytes, dead: str, max_retries: int) -> Outcome:
    """A job held by a slot whose lease lapsed: its attempt counts, so a job
    that keeps killing workers ends on image:failed as ``worker-died``."""
    try:
        fields = loads(raw.decode("utf-8", "strict"))
    except (StrictJSONError, ValueError):
        fields = None
    if not isinstance(fields, dict):
        error = JobError("invalid-job", "payload is not a JSON object (held by a worker that died)")
        return invalid(raw, error, dead)
    count = fields.get("retryCount", 0)
    attempts = (count if isinstance(count, int) and not isinstance(count, bool) else 0) + 1
    job_id = fields.get("jobId")
    if attempts > max_retries:
        fields.update(
            status="failed",
            reason="worker-died",
            attempts=attempts,
            worker=dead,
            failedAt=now_ms(),
            error=f"the job was in flight on a worker that died, {attempts} times "
            f"(max retries {max_retries}): it may crash workers",
        )
        return Outcome("failed", fields, f"Job {job_id} from dead worker {dead} failed after {attempts} attempts")
    fields.update(retryCount=attempts, lastError="worker died while processing", lastReason="worker-died")
    return Outcome("retry", fields, f"Recovered job {job_id} from dead worker {dead}")
