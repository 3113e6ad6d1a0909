"""The worker process: N slots taking jobs (see slot.py), and a main thread
keeping their leases, moving due retries, recovering jobs of slots without a
lease, restarting slots that die, and handling signals."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import threading
import time
from typing import Any

import redis

from ..image.admission import Budget, default_budget
from ..image.pipeline import encoder_pool
from ..image.write import Writer
from ..queue import keys, outcomes, recovery
from ..queue.connect import Backoff, Connector, configuration_problem, follow_primary
from ..queue.lists import Queue
from .config import Config
from .metrics import HealthServer, Metrics, fresh
from .slot import Shared, Slot, payload_job_id, say

# After a clean stop, how long to keep trying to reach Redis to give back
# what a lost reply left in flight (after a hard stop: no second try).
GIVE_BACK_S = 10.0


class Slots:
    """The slot threads of one process: started, watched, restarted, and their
    jobs given back when the process stops."""

    def __init__(self, ids: list[str], connect: Connector, shared: Shared) -> None:
        self.ids = ids
        self.connect = connect
        self.shared = shared
        # The slots' connections carry their ids as names, so that a hard stop
        # can end their reads, where the Redis user may (Worker.run finds out).
        self.named = False
        self._threads: list[threading.Thread | None] = [None] * len(ids)
        self._slots: list[Slot | None] = [None] * len(ids)

    def start(self) -> None:
        for index in range(len(self.ids)):
            self._start(index)

    def _start(self, index: int) -> None:
        wid = self.ids[index]
        name = wid if self.named else None
        slot = Slot(index, wid, lambda: self.connect(name), self.shared)
        thread = threading.Thread(target=slot.run, name=slot.name, daemon=True)
        self._slots[index], self._threads[index] = slot, thread
        thread.start()

    def live(self) -> int:
        return sum(1 for t in self._threads if t is not None and t.is_alive())

    def supervise(self) -> None:
        """Restart slots that died (a bug escaped the wall around each job)."""
        for i, t in enumerate(self._threads):
            if t is not None and not t.is_alive() and not self.shared.stopping.is_set():
                self.shared.metrics.slot_restarts.inc()
                say("MAIN", f"WORKER-{i} stopped unexpectedly; restarting it")
                self._start(i)
        self.shared.metrics.live_slots.set(self.live())

    def clients(self) -> list[redis.Redis]:
        return [s.conn for s in self._slots if s is not None and s.conn is not None]

    def reading(self) -> list[str]:
        """Ids of the slots in a blocking read, which may still receive a job."""
        return [s.wid for s in self._slots if s is not None and s.taking]

    def give_back(self, queue: Queue) -> bool:
        """Give the slots' jobs back and unregister; True when nothing is left
        in flight. Redis errors are retried for GIVE_BACK_S after a clean
        stop, not after a hard stop, and not past another signal: what is
        left waits for the leases to lapse, and another worker recovers it."""
        start = time.monotonic()
        settle = start + self.shared.config.block_timeout + 0.5
        give_up = start + (0 if self.shared.hard_stop.is_set() else GIVE_BACK_S)
        backoff = Backoff()
        while True:
            try:
                # A slot still in its blocking read could take a job given back
                # here, so the flags are read first, the reads are ended, and
                # the round repeats until one began with no slot reading.
                reading = self.reading()
                if reading and self.named:
                    queue.unblock(reading)
                for wid in self.ids:
                    for raw in queue.give_back(wid):
                        say("MAIN", f"Put job {payload_job_id(raw)} held by {wid} back at the head of {keys.JOBS}")
                if reading and time.monotonic() < settle:
                    time.sleep(0.01 if self.named else 0.05)
                    continue
                queue.unregister(self.ids)
                return not any(queue.held(wid) for wid in self.ids)
            except redis.RedisError as e:
                self.shared.metrics.redis_errors.inc()
                delay = backoff.next()
                if time.monotonic() + delay > give_up or self.shared.hard_stop.wait(delay):
                    say("MAIN", f"Redis error while stopping ({e}); giving up")
                    return False
                if backoff.delay <= 0.1:
                    say("MAIN", f"Redis error while stopping ({e}); trying again for up to {GIVE_BACK_S:g}s")


class Worker:
    def __init__(self, connect: Connector, config: Config) -> None:
        self.connect = connect
        self.config = config
        token = secrets.token_hex(3)
        # A fresh token per start: a restarted container keeps its hostname
        # and pid, and must not take over the dead process's slots.
        self.ids = [f"{socket.gethostname()}-{os.getpid()}-{token}-{i}" for i in range(config.workers)]
        self.stopping = threading.Event()  # first signal: take no new jobs
        self.hard_stop = threading.Event()  # second signal, or shutdown timeout
        self.metrics = Metrics()
        self.encoders = encoder_pool()
        self.writer = Writer(durable=config.durable)
        self.budget = Budget(config.memory_budget or default_budget())
        self.shared = Shared(
            config=config,
            metrics=self.metrics,
            encoders=self.encoders,
            writer=self.writer,
            budget=self.budget,
            policy=outcomes.Policy(config.max_retries, config.backoff_base, config.backoff_cap),
            stopping=self.stopping,
            hard_stop=self.hard_stop,
            after_job=self._check_backend,
            acks=connect.acks,
        )
        self.slots = Slots(self.ids, connect, self.shared)
        self.health: HealthServer | None = None
        self.registered = False
        self.last_loop = self.last_redis_ok = time.monotonic()

    def _check_backend(self) -> None:
        line = self.metrics.backend_changed()
        if line is not None:
            say("MAIN", f"Kernels: {line}")

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if not self.stopping.is_set():
            self.stopping.set()
            say(
                "MAIN",
                f"Received {signal.Signals(signum).name}: finishing jobs in hand "
                f"(up to {self.config.shutdown_timeout:g}s); signal again to stop at once",
            )
        else:
            self.hard_stop.set()
            say("MAIN", f"Received {signal.Signals(signum).name} again: putting jobs in hand back")

    def live_slots(self) -> int:
        return self.slots.live()

    def run(self, install_signals: bool = True) -> int:
        """Run until stopped; 0 after a clean stop, 1 when jobs could not be put
        back, 2 on a configuration error (wrong password, database or TLS)."""
        cfg = self.config
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self._check_backend()
        say("MAIN", f"Memory budget for jobs: {self.budget.total / (1 << 20):.0f} MB")
        self.metrics.memory_budget.set(self.budget.total)
        queue = Queue(self.connect(), cfg.done_cap, cfg.failed_cap, self.connect.acks)
        problem = configuration_problem(queue.conn)
        if problem:
            say("MAIN", f"Configuration error: {problem}")
            return 2
        if cfg.metrics_port is not None:
            self.health = HealthServer(cfg.metrics_port, self.metrics, self.healthy, self.ready, cfg.metrics_host)
            say("MAIN", f"Metrics on {cfg.metrics_host}:{self.health.port}/metrics, health on /healthz and /readyz")
        if not self._register(queue):
            return self._exit(queue)
        self.slots.start()
        self._keep_house(queue)
        return self._exit(queue)

    def _register(self, queue: Queue) -> bool:
        """Leases first: a slot must never hold a job without one. False when
        stopped before Redis could be reached."""
        backoff = Backoff()
        while True:
            try:
                queue.beat(self.ids, int(self.config.heartbeat_ttl * 1000))
                self.slots.named = queue.may_unblock(self.ids[0].rpartition("-")[0] + "-main")
                self.registered = True
                return True
            except redis.RedisError as e:
                self.metrics.redis_errors.inc()
                delay = backoff.next()
                say("MAIN", f"Redis error at start-up ({e}); retrying in {delay:.1f}s")
                if self.stopping.wait(delay):
                    return False

    def _keep_house(self, queue: Queue) -> None:
        """The main thread's loop, until the slots have stopped or a hard stop:
        leases, due retries, recovery, dead slots, gauges, the shutdown timeout."""
        cfg = self.config
        ttl_ms = int(cfg.heartbeat_ttl * 1000)
        backoff = Backoff()
        deadline: float | None = None
        next_beat = next_sweep = next_scan = 0.0
        while not self.hard_stop.is_set():
            if self.stopping.is_set():
                if deadline is None:
                    deadline = time.monotonic() + cfg.shutdown_timeout
                if self.live_slots() == 0:
                    break
                if time.monotonic() > deadline:
                    say("MAIN", "Shutdown timeout reached: putting jobs in hand back")
                    self.hard_stop.set()
                    break
            now = self.last_loop = time.monotonic()
            self.slots.supervise()
            try:
                if now >= next_beat:
                    queue.beat(self.ids, ttl_ms)
                    next_beat = now + cfg.heartbeat_ttl / 3
                if now >= next_sweep:
                    follow_primary([queue.conn, *self.slots.clients()])
                    queue.promote_due()
                    scan = now >= next_scan
                    self.metrics.recovered.inc(
                        recovery.recover(
                            queue, self.ids, cfg.max_retries, lambda m: say("MAIN", m), scan, cfg.allowed_roots
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
                say("MAIN", f"Redis error ({e}); retrying in {delay:.1f}s")
                self.hard_stop.wait(delay)
                continue
            self.hard_stop.wait(0.1 if self.stopping.is_set() else 0.2)

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
        """Put back what the slots hold (all of it on a hard stop; after a clean stop
        only what a lost reply left); a worker that never registered holds nothing."""
        if self.hard_stop.is_set():
            self.writer.close()  # from here on no output lands and no temporary file stays
        left = self.registered and not self.slots.give_back(queue)
        if self.health:
            self.health.close()
        if not self.hard_stop.is_set():
            self.encoders.shutdown(wait=True)
        say("MAIN", "Worker stopped" + (" (jobs left in flight: other workers recover them)" if left else ""))
        return 1 if left else 0
