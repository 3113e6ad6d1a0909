"""The worker process: N slots taking jobs, a main thread keeping the leases,
moving due retries, recovering dead workers' jobs and handling signals.

Loop of one slot: take a job (blocking read with a finite timeout), process
it, record the outcome atomically. Redis errors never end the process: the
slot backs off and tries again, and a job it holds stays in its in-flight list
until the outcome is recorded."""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import redis

import fastimg

from . import keys, status
from .errors import InvalidJob, JobError
from .jobs import Job, parse_job
from .metrics import HealthServer, Metrics, fresh
from .outputs import SPEC_V1, OutputSpec
from .limits import Limits
from .pipeline import encoder_pool, process
from .queue import Queue
from .wire import dumps, now_ms

log = logging.getLogger("fastimg.worker")


@dataclass
class Config:
    workers: int = 4
    max_retries: int = 3
    allowed_roots: Tuple[str, ...] = ()
    backoff_base: float = 1.0  # seconds before the first retry; doubles each time
    backoff_cap: float = 300.0
    heartbeat_ttl: float = 30.0  # lease; refreshed every third of it while the process lives
    block_timeout: float = 2.0  # BLMOVE timeout; the socket timeout is longer
    shutdown_timeout: float = 60.0  # after the first signal, before jobs in hand are put back
    done_cap: int = 10_000
    failed_cap: int = 10_000
    spec: Dict[str, OutputSpec] = field(default_factory=lambda: dict(SPEC_V1))
    limits: Limits = field(default_factory=Limits)
    metrics_port: Optional[int] = None  # serve /metrics, /healthz, /readyz here (0: any free port)


def retry_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(attempt-1))],
    never below a tenth of that bound (so a retry is never immediate)."""
    bound = min(cap, base * (2 ** max(0, attempt - 1)))
    return random.uniform(bound / 10, bound)


class _Backoff:
    """Delay between attempts to reach Redis: 0.1 s doubling to 10 s, with jitter."""

    def __init__(self) -> None:
        self.delay = 0.0

    def next(self) -> float:
        self.delay = min(10.0, max(0.1, self.delay * 2))
        return self.delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.delay = 0.0


def _say(name: str, msg: str) -> None:
    log.info("[%s] %s", name, msg)


class Worker:
    def __init__(self, connect: Callable[[], redis.Redis], config: Config) -> None:
        self.connect = connect
        self.config = config
        token = secrets.token_hex(3)
        # A fresh token per start: a restarted container keeps its hostname
        # and pid, and must not take over the dead process's slots.
        self.ids = [f"{socket.gethostname()}-{os.getpid()}-{token}-{i}" for i in range(config.workers)]
        self.stopping = threading.Event()  # first signal: take no new jobs
        self.hard_stop = threading.Event()  # second signal, or shutdown timeout
        self._threads: List[threading.Thread] = []
        self.metrics = Metrics()
        self.encoders = encoder_pool()
        self.health: Optional[HealthServer] = None
        self.registered = False
        self.last_loop = self.last_redis_ok = time.monotonic()

    # -- one slot ----------------------------------------------------------
    def _slot(self, index: int) -> None:
        name, wid = f"WORKER-{index}", self.ids[index]
        queue = Queue(self.connect(), self.config.done_cap, self.config.failed_cap)
        backoff = _Backoff()
        _say(name, "Started")
        while not self.stopping.is_set():
            try:
                raw = queue.take(wid, self.config.block_timeout)
                backoff.reset()
            except redis.RedisError as e:
                self.metrics.redis_errors.inc()
                delay = backoff.next()
                _say(name, f"Redis error while waiting for jobs ({e}); retrying in {delay:.1f}s")
                self.stopping.wait(delay)
                continue
            if raw is not None:
                self.metrics.busy.inc()
                with self.metrics.job.time():
                    self._handle(name, wid, queue, raw)
                self.metrics.busy.dec()
        _say(name, "Stopped")

    def _handle(self, name: str, wid: str, queue: Queue, raw: bytes) -> None:
        started = time.perf_counter()
        try:
            job = parse_job(raw, self.config.allowed_roots, self.config.spec)
        except InvalidJob as e:
            _say(name, f"Invalid job moved to {keys.FAILED} ({e.reason}): {e}")
            record = self._failure(raw, None, e, 1, wid)
            if self._record(name, lambda: queue.failed(wid, raw, record)):
                self.metrics.jobs.labels("failed", e.reason).inc()
            return
        _say(name, f"Processing job {job.job_id} with operations: [{' '.join(job.operations)}]")
        status.publish(queue.conn, job.job_id, "processing", operations=list(job.operations),
                       completed=[], attempt=job.retry_count + 1, worker=wid)
        made: List[str] = []

        def progress(op: str) -> None:
            made.append(op)
            status.publish(queue.conn, job.job_id, "processing", operations=list(job.operations),
                           completed=list(made), attempt=job.retry_count + 1, worker=wid)

        try:
            result = process(job, self.config.limits, log=lambda m: _say(name, m), on_output=progress,
                             encoders=self.encoders)
        except Exception as e:  # noqa: BLE001 - a job must never take its slot down
            error = e if isinstance(e, JobError) else JobError("internal-error", f"{type(e).__name__}: {e}")
            if not isinstance(e, JobError):
                log.exception("[%s] Unexpected error in job %s", name, job.job_id)
                error.retry = True
            self._failed_attempt(name, wid, queue, raw, job, error)
            return
        ms = (time.perf_counter() - started) * 1000
        record = dict(job.fields)
        record.update(
            status="done",
            outputs=[vars(o) for o in result.outputs],
            timings={**result.timings_ms, "total": round(ms, 2)},
            inputBytes=result.input_bytes,
            worker=wid,
            attempts=job.retry_count + 1,
            completedAt=now_ms(),
        )
        if self._record(name, lambda: queue.done(wid, raw, record)):
            _say(name, f"Job {job.job_id} completed successfully in {ms:.0f}ms")
            self.metrics.jobs.labels("done", "").inc()
            self.metrics.observe_stages(result.timings_ms)
            status.publish(queue.conn, job.job_id, "done", outputs=record["outputs"], attempts=record["attempts"])

    def _failed_attempt(self, name: str, wid: str, queue: Queue, raw: bytes, job: Job, error: JobError) -> None:
        attempt = job.retry_count + 1
        if error.retry and job.retry_count < self.config.max_retries:
            delay = retry_delay(attempt, self.config.backoff_base, self.config.backoff_cap)
            due = now_ms() + int(delay * 1000)
            payload = dict(job.fields)
            payload.update(retryCount=attempt, lastError=str(error), lastReason=error.reason, nextAttemptAt=due)
            _say(name, f"Job {job.job_id} failed ({error.reason}: {error}); "
                       f"retry {attempt}/{self.config.max_retries} in {delay:.1f}s")
            if self._record(name, lambda: queue.retry(wid, raw, payload, due)):
                self.metrics.jobs.labels("retry", error.reason).inc()
                status.publish(queue.conn, job.job_id, "retrying", reason=error.reason, error=str(error),
                               attempt=attempt, nextAttemptAt=due)
        else:
            why = "permanently" if not error.retry else f"after {attempt} attempts"
            _say(name, f"Job {job.job_id} failed {why} ({error.reason}): {error}")
            if self._record(name, lambda: queue.failed(wid, raw, self._failure(raw, job, error, attempt, wid))):
                self.metrics.jobs.labels("failed", error.reason).inc()
                status.publish(queue.conn, job.job_id, "failed", reason=error.reason, error=str(error),
                               attempts=attempt)

    @staticmethod
    def _failure(raw: bytes, job: Optional[Job], error: JobError, attempts: int, wid: str) -> Dict[str, Any]:
        if job is not None:
            record: Dict[str, Any] = dict(job.fields)
        else:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            # The payload as it came, so nothing the producer sent is lost.
            record = dict(parsed) if isinstance(parsed, dict) else {}
            record["raw"] = raw.decode("utf-8", "replace")
        record.update(status="failed", error=str(error), reason=error.reason, attempts=attempts,
                      worker=wid, failedAt=now_ms())
        return record

    def _record(self, name: str, write: Callable[[], bool]) -> bool:
        """Record an outcome, waiting out Redis outages: the job stays in flight
        meanwhile, so giving up would only delay it, never lose it."""
        backoff = _Backoff()
        while not self.hard_stop.is_set():
            try:
                if write():
                    return True
                _say(name, "Job was recovered by another worker while in flight; outcome not recorded")
                return False
            except redis.RedisError as e:
                self.metrics.redis_errors.inc()
                delay = backoff.next()
                _say(name, f"Redis error while recording outcome ({e}); retrying in {delay:.1f}s")
                self.hard_stop.wait(delay)
        return False

    # -- the process -------------------------------------------------------
    def _recover_dead(self, queue: Queue) -> None:
        for dead in queue.dead_workers():
            if dead in self.ids:
                continue
            for raw in queue.held(dead):
                try:
                    fields = json.loads(raw)
                except ValueError:
                    fields = None
                if not isinstance(fields, dict):
                    error = JobError("invalid-job", "payload is not a JSON object (held by a worker that died)")
                    record = self._failure(raw, None, error, 1, dead)
                    queue.recover(dead, raw, dumps(record), to_failed=True)
                    continue
                count = fields.get("retryCount", 0)
                attempts = (count if isinstance(count, int) and not isinstance(count, bool) else 0) + 1
                if attempts > self.config.max_retries:
                    fields.update(status="failed", reason="worker-died", attempts=attempts, worker=dead,
                                  failedAt=now_ms(),
                                  error=f"the job was in flight on a worker that died, {attempts} times "
                                        f"(max retries {self.config.max_retries}): it may crash workers")
                    moved = queue.recover(dead, raw, dumps(fields), to_failed=True)
                else:
                    fields.update(retryCount=attempts, lastError="worker died while processing",
                                  lastReason="worker-died")
                    moved = queue.recover(dead, raw, dumps(fields), to_failed=False)
                if moved == 1:
                    self.metrics.recovered.inc()
                    _say("MAIN", f"Recovered job {fields.get('jobId')} from dead worker {dead}")
            queue.retire(dead)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if not self.stopping.is_set():
            self.stopping.set()
            _say("MAIN", f"Received {signal.Signals(signum).name}: finishing jobs in hand "
                         f"(up to {self.config.shutdown_timeout:.0f}s); signal again to stop at once")
        else:
            self.hard_stop.set()
            _say("MAIN", f"Received {signal.Signals(signum).name} again: putting jobs in hand back")

    def run(self, install_signals: bool = True) -> int:
        cfg = self.config
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        info = fastimg.backends()
        _say("MAIN", f"Kernels: {info.describe()}")
        self.metrics.backend.info({"backend": info.default, "device": info.cuda_device or "",
                                   "reason": info.cuda_reason or ""})
        if cfg.metrics_port is not None:
            self.health = HealthServer(cfg.metrics_port, self.metrics, self.healthy, self.ready)
            _say("MAIN", f"Metrics on :{self.health.port}/metrics, health on /healthz and /readyz")
        queue = Queue(self.connect(), cfg.done_cap, cfg.failed_cap)
        ttl_ms = int(cfg.heartbeat_ttl * 1000)
        backoff = _Backoff()
        while True:  # leases first: a slot must never hold a job without one
            try:
                queue.beat(self.ids, ttl_ms)
                self.registered = True
                break
            except redis.RedisError as e:
                self.metrics.redis_errors.inc()
                delay = backoff.next()
                _say("MAIN", f"Redis error at start-up ({e}); retrying in {delay:.1f}s")
                if self.stopping.wait(delay):
                    return 0
        for i in range(cfg.workers):
            t = threading.Thread(target=self._slot, args=(i,), name=f"WORKER-{i}", daemon=True)
            t.start()
            self._threads.append(t)

        deadline: Optional[float] = None
        next_beat = next_sweep = 0.0
        while any(t.is_alive() for t in self._threads):
            if self.stopping.is_set() and deadline is None:
                deadline = time.monotonic() + cfg.shutdown_timeout
            if deadline is not None and time.monotonic() > deadline and not self.hard_stop.is_set():
                _say("MAIN", "Shutdown timeout reached: putting jobs in hand back")
                self.hard_stop.set()
            if self.hard_stop.is_set():
                break
            now = self.last_loop = time.monotonic()
            try:
                if now >= next_beat:
                    queue.beat(self.ids, ttl_ms)
                    next_beat = now + cfg.heartbeat_ttl / 3
                if now >= next_sweep:
                    queue.promote_due()
                    self._recover_dead(queue)
                    self._update_gauges(queue)
                    next_sweep = now + min(1.0, cfg.heartbeat_ttl / 3)
                backoff.reset()
                self.last_redis_ok = now
            except redis.RedisError as e:
                self.metrics.redis_errors.inc()
                delay = backoff.next()
                _say("MAIN", f"Redis error ({e}); retrying in {delay:.1f}s")
                self.hard_stop.wait(delay)
                continue
            self.hard_stop.wait(0.2)

        return self._exit(queue)

    def _update_gauges(self, queue: Queue) -> None:
        s = queue.stats()
        for name in ("jobs", "retry", "done", "failed"):
            self.metrics.queue.labels(name).set(s[name])
        self.metrics.in_flight.set(s["inFlight"])
        self.metrics.live_workers.set(s["liveWorkers"])

    def healthy(self) -> bool:
        """Redis answered recently and the main loop is turning."""
        return fresh(self.last_loop, 10.0) and fresh(self.last_redis_ok, max(30.0, self.config.heartbeat_ttl))

    def ready(self) -> bool:
        return self.registered and not self.stopping.is_set()

    def _exit(self, queue: Queue) -> int:
        backoff = _Backoff()
        for _ in range(50):
            try:
                if self.hard_stop.is_set():
                    for wid in self.ids:
                        n = queue.give_back(wid)
                        if n:
                            _say("MAIN", f"Put {n} job(s) held by {wid} back at the head of {keys.JOBS}")
                queue.unregister(self.ids)
                break
            except redis.RedisError as e:
                # The leases expire on their own; any live worker then recovers the jobs.
                _say("MAIN", f"Redis error while stopping ({e})")
                time.sleep(backoff.next())
        if self.health:
            self.health.close()
        _say("MAIN", "Worker stopped")
        return 0
