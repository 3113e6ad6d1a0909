"""Random sequences of enqueue, take, succeed, fail, crash, recover and retry
against a real Redis, through the worker's own code paths; after every step
every job is in exactly one place and no attempt count passes the limit."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fastimg.image.errors import PermanentError, TransientError
from fastimg.queue import keys, outcomes, recovery
from fastimg.queue.connect import connector
from fastimg.queue.jobs import parse_job
from fastimg.queue.lists import Queue

MAX_RETRIES = 2
SLOTS = 2


@pytest.fixture
def machine_env(redis_server, r):
    QueueMachine.url = redis_server.url
    yield


class QueueMachine(RuleBasedStateMachine):
    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.conn = connector(self.url, 0.1)()
        self.conn.flushall()
        self.queue = Queue(self.conn, done_cap=0, failed_cap=0)
        self.policy = outcomes.Policy(max_retries=MAX_RETRIES, backoff_base=0.001)
        self.names = itertools.count()
        self.slots = [self._new_slot() for _ in range(SLOTS)]
        self.jobs: set = set()

    def _new_slot(self) -> str:
        wid = f"model-{next(self.names)}"
        self.queue.beat([wid], ttl_ms=600_000)
        return wid

    def _held(self, slot: int):
        held = self.queue.held(self.slots[slot])
        return held[0] if held else None

    @rule()
    def enqueue(self):
        job_id = f"job{len(self.jobs)}"
        self.jobs.add(job_id)
        self.conn.rpush(
            keys.JOBS,
            json.dumps(
                {
                    "jobId": job_id,
                    "inputPath": "/in.jpg",
                    "outputDir": "/out",
                    "operations": ["thumbnail"],
                    "timestamp": 1,
                    "retryCount": 0,
                }
            ),
        )

    @rule(slot=st.integers(0, SLOTS - 1))
    def take(self, slot):
        if self._held(slot) is None:
            self.queue.take(self.slots[slot], 0.01)

    @rule(slot=st.integers(0, SLOTS - 1))
    def succeed(self, slot):
        raw = self._held(slot)
        if raw is not None:
            job = parse_job(raw)
            record = dict(job.fields, status="done", attempts=job.retry_count + 1)
            assert self.queue.done(self.slots[slot], raw, record)

    @rule(slot=st.integers(0, SLOTS - 1), transient=st.booleans())
    def fail(self, slot, transient):
        raw = self._held(slot)
        if raw is not None:
            error = TransientError("io-error", "disk hiccup") if transient else PermanentError("too-large", "big")
            outcome = outcomes.after_error(parse_job(raw), error, self.slots[slot], self.policy)
            if outcome.list == "retry":
                assert self.queue.retry(self.slots[slot], raw, outcome.record, outcome.due_ms)
            else:
                assert self.queue.failed(self.slots[slot], raw, outcome.record)

    @rule(slot=st.integers(0, SLOTS - 1), forgotten=st.booleans())
    def crash(self, slot, forgotten):
        # The process dies: its lease is gone, its in-flight list stays; and
        # maybe the registry lost it too (only a full scan finds it then).
        self.conn.delete(keys.heartbeat(self.slots[slot]))
        if forgotten:
            self.conn.srem(keys.WORKERS, self.slots[slot])
        self.slots[slot] = self._new_slot()

    @rule(scan_all=st.booleans())
    def recover(self, scan_all):
        recovery.recover(self.queue, [], MAX_RETRIES, lambda _m: None, scan_all)

    @rule()
    def retries_come_due(self):
        for member in self.conn.zrange(keys.RETRY_DUE, 0, -1):
            self.conn.zadd(keys.RETRY_DUE, {member: 0})
        self.queue.promote_due()

    @invariant()
    def every_job_is_in_exactly_one_place(self):
        places = [keys.JOBS, keys.RETRY, keys.DONE, keys.FAILED] + [
            k.decode() for k in self.conn.keys("image:processing:*")
        ]
        seen = Counter()
        for key in places:
            for raw in self.conn.lrange(key, 0, -1):
                rec = json.loads(raw)
                seen[rec["jobId"]] += 1
                assert rec.get("retryCount", 0) <= MAX_RETRIES + 1
                assert rec.get("attempts", 0) <= MAX_RETRIES + 1
        assert set(seen) == self.jobs and all(n == 1 for n in seen.values()), seen
        assert self.conn.llen(keys.RETRY) == self.conn.zcard(keys.RETRY_DUE)

    def teardown(self):
        self.conn.close()


QueueMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.usefixtures("machine_env")
class TestQueueModel(QueueMachine.TestCase):
    pass
