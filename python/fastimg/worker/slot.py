"""One worker slot: take a job (a blocking read with a finite timeout),
process it, record the outcome atomically; again, until the process stops.

Nothing that happens while handling one job ends the slot: every exception
ends that job. Redis errors never end it either: the slot backs off,
re-reads its own in-flight list (a job whose reply was lost is there) and
goes on."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import redis

from ..image.admission import Budget
from ..image.errors import InvalidJob, JobError
from ..image.pipeline import process
from ..image.write import Stopped, Superseded, Writer, remove_stale_temps
from ..queue import outcomes, status
from ..queue.address import Acks
from ..queue.connect import Backoff
from ..queue.jobs import parse_job
from ..queue.lists import GONE, Finish, Queue
from .config import Config
from .metrics import Metrics

log = logging.getLogger("fastimg.worker")


def say(name: str, msg: str) -> None:
    log.info("[%s] %s", name, msg)


def payload_job_id(raw: bytes) -> str:
    """The jobId of a payload for log lines, without parsing it again."""
    start = raw.find(b'"jobId"')
    if start < 0:
        return "(no jobId)"
    value = raw[start + 7 : start + 7 + 240].split(b'"')
    return value[1].decode("utf-8", "backslashreplace") if len(value) > 2 else "(no jobId)"


@dataclass
class Shared:
    """What the slots of one process share."""

    config: Config
    metrics: Metrics
    encoders: Executor
    writer: Writer
    budget: Budget
    policy: outcomes.Policy
    stopping: threading.Event  # first signal: take no new jobs
    hard_stop: threading.Event  # second signal, or shutdown timeout
    after_job: Callable[[], None]  # the process's look at the kernels' backend
    acks: Acks  # what an outcome record needs from the replicas (queue/address.py)


class Slot:
    def __init__(self, index: int, wid: str, connect: Callable[[], redis.Redis], shared: Shared) -> None:
        self.name, self.wid = f"WORKER-{index}", wid
        self.connect = connect
        self.shared = shared
        self.taking = False  # in a blocking read: may still receive a job
        self.conn: redis.Redis | None = None  # once running: the process's main thread keeps it on the primary

    def run(self) -> None:
        try:
            self._loop()
        except Exception:
            log.exception("[%s] Slot stopped by an unexpected error", self.name)
        finally:
            conn, self.conn = self.conn, None
            if conn is not None:
                conn.close()

    def _loop(self) -> None:
        shared, name, wid = self.shared, self.name, self.wid
        queue = Queue(self.connect(), shared.config.done_cap, shared.config.failed_cap, shared.acks)
        self.conn = queue.conn
        backoff = Backoff()
        check_held = True  # at start and after a connection error, our list may hold a job
        say(name, "Started")
        while not shared.stopping.is_set():
            try:
                raw = None
                if check_held:
                    held = queue.held(wid)
                    check_held = bool(held)  # drain what is there before taking more
                    if held:
                        raw = held[0]
                        say(name, f"Resuming job {payload_job_id(raw)} found in this slot's in-flight list")
                if raw is None:
                    # Flagged before the stop check: once the process's exit
                    # sees no flag after the stop began, no slot can take a job
                    # any more.
                    self.taking = True
                    try:
                        if shared.stopping.is_set():
                            break
                        raw = queue.take(wid, shared.config.block_timeout)
                    finally:
                        self.taking = False
                backoff.reset()
            except redis.RedisError as e:
                shared.metrics.redis_errors.inc()
                check_held = True
                delay = backoff.next()
                say(name, f"Redis error while waiting for jobs ({e}); retrying in {delay:.1f}s")
                shared.stopping.wait(delay)
                continue
            if raw is None:
                continue
            if shared.stopping.is_set():
                break  # taken as the stop began: the process's exit puts it back untouched
            shared.metrics.busy.inc()
            try:
                with shared.metrics.job.time():
                    self._attempt(queue, raw)
            finally:
                shared.metrics.busy.dec()
                shared.after_job()
            check_held = True  # one read per job proves nothing was left behind
        say(name, "Stopped")

    def _attempt(self, queue: Queue, raw: bytes) -> None:
        """Handle one payload; whatever happens, it ends here with its outcome
        recorded (or, on a hard stop, with the job put back)."""
        token = secrets.token_hex(8)
        try:
            self._handle(queue, raw, token)
        except (Stopped, InterruptedError):
            pass  # hard stop: the main thread puts the job back
        except Exception as e:
            log.exception("[%s] Unexpected error while handling job %s", self.name, payload_job_id(raw))
            error = JobError("internal-error", f"{type(e).__name__}: {e}"[:2000])
            self._record(queue, raw, outcomes.unhandled(raw, error, self.wid), token, publish=False)

    def _handle(self, queue: Queue, raw: bytes, token: str) -> None:
        shared, name, wid = self.shared, self.name, self.wid
        started = time.perf_counter()
        try:
            job = parse_job(raw, shared.config.allowed_roots, shared.config.spec)
        except InvalidJob as e:
            self._record(queue, raw, outcomes.invalid(raw, e, wid), token, publish=False)
            return
        say(name, f"Processing job {job.job_id} with operations: [{' '.join(job.operations)}]")
        state = {"operations": list(job.operations), "attempt": job.retry_count + 1, "worker": wid}
        status.publish(queue.conn, job.job_id, "processing", completed=[], **state)
        made: list[str] = []

        def progress(op: str) -> None:
            made.append(op)
            status.publish(queue.conn, job.job_id, "processing", completed=list(made), **state)

        retried = "lastReason" in job.fields
        try:
            result = process(
                job,
                shared.config.limits,
                log=lambda m: say(name, m),
                on_output=progress,
                encoders=shared.encoders,
                writer=shared.writer,
                budget=shared.budget,
                still_ours=lambda: self._still_ours(queue, raw),
                remove_stale=retried,
            )
        except Superseded:
            say(
                name,
                f"Job {job.job_id} was taken over by another worker while this slot's lease had "
                "lapsed; its outputs were discarded",
            )
            return
        except (Stopped, InterruptedError):
            raise
        except JobError as e:
            outcome = outcomes.after_error(job, e, wid, shared.policy)
            if outcome.list == "failed" and retried:
                remove_stale_temps(job)  # a killed attempt's, which this one never reached
            self._record(queue, raw, outcome, token)
            return
        except Exception as e:
            log.exception("[%s] Unexpected error in job %s", name, job.job_id)
            error = JobError("internal-error", f"{type(e).__name__}: {e}")
            error.retry = True
            self._record(queue, raw, outcomes.after_error(job, error, wid, shared.policy), token)
            return
        timings = {**result.timings_ms, "total": round((time.perf_counter() - started) * 1000, 2)}
        outcome = outcomes.done(job, [vars(o) for o in result.outputs], timings, result.input_bytes, wid, result.damage)
        if self._record(queue, raw, outcome, token):
            shared.metrics.observe_stages(result.timings_ms)

    def _still_ours(self, queue: Queue, raw: bytes) -> bool:
        """Asked before a job's outputs land: after a Redis outage longer than
        the lease, another worker may have taken the job over."""
        shared = self.shared
        backoff = Backoff()
        while not shared.hard_stop.is_set():
            try:
                return queue.owns(self.wid, raw, int(shared.config.heartbeat_ttl * 1000))
            except redis.RedisError:
                shared.metrics.redis_errors.inc()
                shared.hard_stop.wait(backoff.next())
        raise Stopped()

    def _record(self, queue: Queue, raw: bytes, outcome: outcomes.Outcome, token: str, publish: bool = True) -> bool:
        """Record an outcome, waiting out Redis outages: the job stays in flight
        meanwhile, so giving up would only delay it, never lose it. ``publish``
        updates the job's status (not for payloads that were not jobs)."""
        shared, name = self.shared, self.name
        job_id = outcome.record.get("jobId")
        backoff = Backoff()
        while not shared.hard_stop.is_set():
            try:
                result = self._write(queue, raw, outcome, token)
                break
            except redis.RedisError as e:
                shared.metrics.redis_errors.inc()
                delay = backoff.next()
                say(name, f"Redis error while recording the outcome of job {job_id} ({e}); retrying in {delay:.1f}s")
                shared.hard_stop.wait(delay)
        else:
            return False
        if result == GONE:
            say(
                name,
                f"Job {job_id} was no longer in this slot's in-flight list (its lease had lapsed and "
                f"another worker took it over); this attempt's outcome ({outcome.list}) was not recorded",
            )
            return False
        say(name, outcome.message)
        reason = str(outcome.record.get("reason", outcome.record.get("lastReason", "")))
        shared.metrics.jobs.labels(outcome.list, "" if outcome.list == "done" else reason).inc()
        if publish and isinstance(job_id, str):
            state, fields = outcome.status()
            status.publish(queue.conn, job_id, state, **fields)
        return True

    def _write(self, queue: Queue, raw: bytes, outcome: outcomes.Outcome, token: str) -> Finish:
        if outcome.list == "done":
            return queue.done(self.wid, raw, outcome.record, token)
        if outcome.list == "failed":
            return queue.failed(self.wid, raw, outcome.record, token)
        return queue.retry(self.wid, raw, outcome.record, outcome.due_ms or 0, token)
