"""The worker process: N slots taking jobs, a main thread keeping the leases,
moving due retries, recovering jobs of slots without a lease, restarting
slots that die, and handling signals.

Loop of one slot: take a job (blocking read with a finite timeout), process
it, record the outcome atomically. Nothing that happens while handling one
job ends the slot: every exception ends that job. Redis errors never end the
process: the slot backs off, re-reads its own in-flight list (a job whose
reply was lost is there) and goes on."""

from __future__ import annotations

import logging
import os
import random
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

import fastimg

from ..image.admission import Budget, default_budget
from ..image.errors import InvalidJob, JobError
from ..image.limits import Limits
from ..image.outputs import SPEC_V1, OutputSpec
from ..image.pipeline import encoder_pool, process
from ..image.write import Stopped, Superseded, Writer, remove_stale_temps
from ..queue import keys, outcomes, recovery, status
from ..queue.connect import configuration_problem
from ..queue.jobs import parse_job
from ..queue.queue import GONE, Queue
from .metrics import HealthServer, Metrics, fresh

log = logging.getLogger("fastimg.worker")


@dataclass
class Config:
    """Every setting of a worker process; the CLI shows these defaults."""

    workers: int = 4
    max_retries: int = 3
    allowed_roots: tuple[str, ...] = ()
    backoff_base: float = 1.0  # seconds before the first retry; doubles each time
    backoff_cap: float = 300.0
    heartbeat_ttl: float = 30.0  # lease; refreshed every third of it while the process lives
    block_timeout: float = 2.0  # BLMOVE timeout; the socket timeout is longer
    shutdown_timeout: float = 60.0  # after the first signal, before jobs in hand are put back
    done_cap: int = 10_000
    failed_cap: int = 10_000
    spec: dict[str, OutputSpec] = field(default_factory=lambda: dict(SPEC_V1))
    limits: Limits = field(default_factory=Limits)
    metrics_port: int | None = None  # serve /metrics, /healthz and /readyz here (0: any free port)
    metrics_host: str = "127.0.0.1"
    memory_budget: int | None = None  # bytes for all jobs at once; None: from the cgroup or free memory
    durable: bool = True  # fsync outputs and their directory before a job counts as done
    orphan_scan_interval: float = 30.0  # seconds between scans for in-flight lists nobody registered


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


def _job_id(raw: bytes) -> str:
    """The jobId of a payload for log lines, without parsing it again."""
    start = raw.find(b'"jobId"')
    if start < 0:
        return "(no jobId)"
    value = raw[start + 7 : start + 7 + 240].split(b'"')
    return value[1].decode("utf-8", "backslashreplace") if len(value) > 2 else "(no jobId)"


class Worker:
    def __init__(self, connect: Callable[..., redis.Redis], config: Config) -> None:
        self.connect = connect
        self.config = config
        token = secrets.token_hex(3)
        # A fresh token per start: a restarted container keeps its hostname
        # and pid, and must not take over the dead process's slots.
        self.ids = [f"{socket.gethostname()}-{os.getpid()}-{token}-{i}" for i in range(config.workers)]
        self.stopping = threading.Event()  # first signal: take no new jobs
        self.hard_stop = threading.Event()  # second signal, or shutdown timeout
        self._threads: list[threading.Thread | None] = [None] * config.workers
        self._taking = [False] * config.workers  # in a blocking read: may still receive a job
        # The slots' connections carry their ids as names, so that a hard stop
        # can end their reads, where the Redis user may (run() finds out).
        self._named = False
        self.metrics = Metrics()
        self.encoders = encoder_pool()
        self.writer = Writer(durable=config.durable)
        self.budget = Budget(config.memory_budget or default_budget())
        self.policy = outcomes.Policy(config.max_retries, config.backoff_base, config.backoff_cap)
        self.health: HealthServer | None = None
        self.registered = False
        self._backend_line = ""  # the [MAIN] Kernels: line last logged
        self._backend_lock = threading.Lock()
        self.last_loop = self.last_redis_ok = time.monotonic()

    # -- one slot ----------------------------------------------------------
    def _slot(self, index: int) -> None:
        try:
            self._slot_loop(index)
        except Exception:
            log.exception("[WORKER-%d] Slot stopped by an unexpected error", index)

    def _slot_loop(self, index: int) -> None:
        name, wid = f"WORKER-{index}", self.ids[index]
        queue = Queue(self.connect(wid if self._named else None), self.config.done_cap, self.config.failed_cap)
        backoff = _Backoff()
        check_held = True  # at start and after a connection error, our list may hold a job
        _say(name, "Started")
        while not self.stopping.is_set():
            try:
                raw = None
                if check_held:
                    held = queue.held(wid)
                    check_held = bool(held)  # drain what is there before taking more
                    if held:
                        raw = held[0]
                        _say(name, f"Resuming job {_job_id(raw)} found in this slot's in-flight list")
                if raw is None:
                    # Flagged before the stop check: once _exit sees no flag
                    # after the stop began, no slot can take a job any more.
                    self._taking[index] = True
                    try:
                        if self.stopping.is_set():
                            break
                        raw = queue.take(wid, self.config.block_timeout)
                    finally:
                        self._taking[index] = False
                backoff.reset()
            except redis.RedisError as e:
                self.metrics.redis_errors.inc()
                check_held = True
                delay = backoff.next()
                _say(name, f"Redis error while waiting for jobs ({e}); retrying in {delay:.1f}s")
                self.stopping.wait(delay)
                continue
            if raw is None:
                continue
            if self.stopping.is_set():
                break  # taken as the stop began: _exit puts it back untouched
            self.metrics.busy.inc()
            try:
                with self.metrics.job.time():
                    self._attempt(name, wid, queue, raw)
            finally:
                self.metrics.busy.dec()
                self._check_backend()
            check_held = True  # one read per job proves nothing was left behind
        _say(name, "Stopped")

    def _attempt(self, name: str, wid: str, queue: Queue, raw: bytes) -> None:
        """Handle one payload; whatever happens, it ends here with its outcome
        recorded (or, on a hard stop, with the job put back)."""
        token = secrets.token_hex(8)
        try:
            self._handle(name, wid, queue, raw, token)
        except (Stopped, InterruptedError):
            pass  # hard stop: the main thread puts the job back
        except Exception as e:
            log.exception("[%s] Unexpected error while handling job %s", name, _job_id(raw))
            error = JobError("internal-error", f"{type(e).__name__}: {e}"[:2000])
            self._record(name, wid, queue, raw, outcomes.unhandled(raw, error, wid), token, publish=False)

    def _handle(self, name: str, wid: str, queue: Queue, raw: bytes, token: str) -> None:
        started = time.perf_counter()
        try:
            job = parse_job(raw, self.config.allowed_roots, self.config.spec)
        except InvalidJob as e:
            self._record(name, wid, queue, raw, outcomes.invalid(raw, e, wid), token, publish=False)
            return
        _say(name, f"Processing job {job.job_id} with operations: [{' '.join(job.operations)}]")
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
                self.config.limits,
                log=lambda m: _say(name, m),
                on_output=progress,
                encoders=self.encoders,
                writer=self.writer,
                budget=self.budget,
                still_ours=lambda: self._still_ours(queue, wid, raw),
                remove_stale=retried,
            )
        except Superseded:
            _say(
                name,
                f"Job {job.job_id} was taken over by another worker while this slot's lease had "
                "lapsed; its outputs were discarded",
            )
            return
        except (Stopped, InterruptedError):
            raise
        except JobError as e:
            outcome = outcomes.after_error(job, e, wid, self.policy)
            if outcome.list == "failed" and retried:
                remove_stale_temps(job)  # a killed attempt's, which this one never reached
            self._record(name, wid, queue, raw, outcome, token)
            return
        except Exception as e:
            log.exception("[%s] Unexpected error in job %s", name, job.job_id)
            error = JobError("internal-error", f"{type(e).__name__}: {e}")
            error.retry = True
            self._record(name, wid, queue, raw, outcomes.after_error(job, error, wid, self.policy), token)
            return
        timings = {**result.timings_ms, "total": round((time.perf_counter() - started) * 1000, 2)}
        outcome = outcomes.done(job, [vars(o) for o in result.outputs], timings, result.input_bytes, wid)
        if self._record(name, wid, queue, raw, outcome, token):
            self.metrics.observe_stages(result.timings_ms)

    def _still_ours(self, queue: Queue, wid: str, raw: bytes) -> bool:
        """Asked before a job's outputs land: after a Redis outage longer than
        the lease, another worker may have taken the job over."""
        backoff = _Backoff()
        while not self.hard_stop.is_set():
            try:
                return queue.owns(wid, raw, int(self.config.heartbeat_ttl * 1000))
            except redis.RedisError:
                self.metrics.redis_errors.inc()
                self.hard_stop.wait(backoff.next())
        raise Stopped()

    def _record(
        self, name: str, wid: str, queue: Queue, raw: bytes, outcome: outcomes.Outcome, token: str, publish: bool = True
    ) -> bool:
        """Record an outcome, waiting out Redis outages: the job stays in flight
        meanwhile, so giving up would only delay it, never lose it. ``publish``
        updates the job's status (not for payloads that were not jobs)."""
        job_id = outcome.record.get("jobId")
        write = {
            "done": lambda: queue.done(wid, raw, outcome.record, token),
            "failed": lambda: queue.failed(wid, raw, outcome.record, token),
            "retry": lambda: queue.retry(wid, raw, outcome.record, outcome.due_ms or 0, token),
        }[outcome.list]
        backoff = _Backoff()
        while not self.hard_stop.is_set():
            try:
                result = write()
                break
            except redis.RedisError as e:
                self.metrics.redis_errors.inc()
                delay = backoff.next()
                _say(name, f"Redis error while recording the outcome of job {job_id} ({e}); retrying in {delay:.1f}s")
                self.hard_stop.wait(delay)
        else:
            return False
        if result == GONE:
            _say(
                name,
                f"Job {job_id} was no longer in this slot's in-flight list (its lease had lapsed and "
                f"another worker took it over); this attempt's outcome ({outcome.list}) was not recorded",
            )
            return False
        _say(name, outcome.message)
        reason = str(outcome.record.get("reason", outcome.record.get("lastReason", "")))
        self.metrics.jobs.labels(outcome.list, "" if outcome.list == "done" else reason).inc()
        if publish and isinstance(job_id, str):
            state, fields = outcome.status()
            status.publish(queue.conn, job_id, state, **fields)
        return True

    def _check_backend(self) -> None:
        """Say so when the kernels changed backend (a sticky CUDA error moves
        them to the CPU for the rest of the process)."""
        info = fastimg.backends()
        line = info.describe()
        with self._backend_lock:
            if line == self._backend_line:
                return
            self._backend_line = line
        _say("MAIN", f"Kernels: {line}")
        self.metrics.backend.info(
            {"backend": info.default, "device": info.cuda_device or "", "reason": info.cuda_reason or ""}
        )

    # -- the process -------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        if not self.stopping.is_set():
            self.stopping.set()
            _say(
                "MAIN",
                f"Received {signal.Signals(signum).name}: finishing jobs in hand "
                f"(up to {self.config.shutdown_timeout:g}s); signal again to stop at once",
            )
        else:
            self.hard_stop.set()
            _say("MAIN", f"Received {signal.Signals(signum).name} again: putting jobs in hand back")

    def _start_slot(self, index: int) -> None:
        t = threading.Thread(target=self._slot, args=(index,), name=f"WORKER-{index}", daemon=True)
        self._threads[index] = t
        t.start()

    def live_slots(self) -> int:
        return sum(1 for t in self._threads if t is not None and t.is_alive())

    def _supervise(self) -> None:
        """Restart slots that died (a bug escaped the wall around each job)."""
        for i, t in enumerate(self._threads):
            if t is not None and not t.is_alive() and not self.stopping.is_set():
                self.metrics.slot_restarts.inc()
                _say("MAIN", f"WORKER-{i} stopped unexpectedly; restarting it")
                self._start_slot(i)
        self.metrics.live_slots.set(self.live_slots())

    def run(self, install_signals: bool = True) -> int:
        """Run until stopped; 0 after a clean stop, 1 when jobs could not be put
        back, 2 on a configuration error (wrong password, database or TLS)."""
        cfg = self.config
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self._check_backend()
        _say("MAIN", f"Memory budget for jobs: {self.budget.total / (1 << 20):.0f} MB")
        self.metrics.memory_budget.set(self.budget.total)
        queue = Queue(self.connect(), cfg.done_cap, cfg.failed_cap)
        problem = configuration_problem(queue.conn)
        if problem:
            _say("MAIN", f"Configuration error: {problem}")
            return 2
        if cfg.metrics_port is not None:
            self.health = HealthServer(cfg.metrics_port, self.metrics, self.healthy, self.ready, cfg.metrics_host)
            _say("MAIN", f"Metrics on {cfg.metrics_host}:{self.health.port}/metrics, health on /healthz and /readyz")
        ttl_ms = int(cfg.heartbeat_ttl * 1000)
        backoff = _Backoff()
        while True:  # leases first: a slot must never hold a job without one
            try:
                queue.beat(self.ids, ttl_ms)
                self._named = queue.may_unblock(self.ids[0].rpartition("-")[0] + "-main")
                self.registered = True
                break
            except redis.RedisError as e:
                self.metrics.redis_errors.inc()
                delay = backoff.next()
                _say("MAIN", f"Redis error at start-up ({e}); retrying in {delay:.1f}s")
                if self.stopping.wait(delay):
                    return self._exit(queue)
        for i in range(cfg.workers):
            self._start_slot(i)

        deadline: float | None = None
        next_beat = next_sweep = next_scan = 0.0
        while not self.hard_stop.is_set():
            if self.stopping.is_set():
                if deadline is None:
                    deadline = time.monotonic() + cfg.shutdown_timeout
                if self.live_slots() == 0:
                    break
                if time.monotonic() > deadline:
                    _say("MAIN", "Shutdown timeout reached: putting jobs in hand back")
                    self.hard_stop.set()
                    break
            now = self.last_loop = time.monotonic()
            self._supervise()
            try:
                if now >= next_beat:
                    queue.beat(self.ids, ttl_ms)
                    next_beat = now + cfg.heartbeat_ttl / 3
                if now >= next_sweep:
                    queue.promote_due()
                    scan = now >= next_scan
                    self.metrics.recovered.inc(
                        recovery.recover(
                            queue, self.ids, cfg.max_retries, lambda m: _say("MAIN", m), scan, cfg.allowed_roots
                        )
                    )
                    if scan:
                        next_scan = now + cfg.orphan_scan_interval
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
            self.hard_stop.wait(0.1 if self.stopping.is_set() else 0.2)

        return self._exit(queue)

    def _update_gauges(self, queue: Queue) -> None:
        s = queue.stats()
        for name in ("jobs", "retry", "done", "failed"):
            self.metrics.queue.labels(name).set(s[name])
        self.metrics.in_flight.set(s["inFlight"])
        self.metrics.live_workers.set(s["liveWorkers"])
        self.metrics.memory_used.set(self.budget.used)

    def healthy(self) -> bool:
        """Redis answered recently and the main loop is turning."""
        return fresh(self.last_loop, 10.0) and fresh(self.last_redis_ok, max(30.0, self.config.heartbeat_ttl))

    def ready(self) -> bool:
        """Registered, not stopping, and every slot alive to take jobs."""
        return self.registered and not self.stopping.is_set() and self.live_slots() == self.config.workers

    def _exit(self, queue: Queue) -> int:
        """Put back what the slots hold (all of it on a hard stop; after a clean
        stop only what a lost reply left), then leave the registry."""
        if self.hard_stop.is_set():
            self.writer.close()  # from here on no output lands and no temporary file stays
        left = False
        backoff = _Backoff()
        settle = time.monotonic() + self.config.block_timeout + 0.5
        errors = 0
        while errors < 50:
            try:
                # A slot still in its blocking read could take a job given back
                # here, so the flags are read first, the reads are ended, and
                # the round repeats until one began with no slot reading.
                reading = [wid for wid, taking in zip(self.ids, self._taking, strict=True) if taking]
                if reading and self._named:
                    queue.unblock(reading)
                for wid in self.ids:
                    for raw in queue.give_back(wid):
                        _say("MAIN", f"Put job {_job_id(raw)} held by {wid} back at the head of {keys.JOBS}")
                if reading and time.monotonic() < settle:
                    time.sleep(0.01 if self._named else 0.05)
                    continue
                queue.unregister(self.ids)
                left = any(queue.held(wid) for wid in self.ids)
                break
            except redis.RedisError as e:
                # The leases expire on their own; any live worker then recovers the jobs.
                _say("MAIN", f"Redis error while stopping ({e})")
                left = True
                errors += 1
                time.sleep(backoff.next())
        if self.health:
            self.health.close()
        if not self.hard_stop.is_set():
            self.encoders.shutdown(wait=True)
        _say("MAIN", "Worker stopped" + (" (jobs left in flight: other workers recover them)" if left else ""))
        return 1 if left else 0
