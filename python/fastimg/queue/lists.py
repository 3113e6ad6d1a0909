"""The queue's state changes. Every change that touches more than one key is
one Lua script, so Redis applies it whole or not at all: a job is always in
exactly one place."""

from __future__ import annotations

import json
import time
from typing import Any, cast

import redis

from . import keys
from .address import Acks, acknowledged
from .wire import dumps, now_ms, text

# Take: BLMOVE image:jobs -> in-flight list (see Queue.take).

# Record an outcome: the job leaves the in-flight list and lands on exactly one
# list, and the slot's last-outcome key remembers the attempt's token. Returns
# 1 when recorded; 2 when this attempt was recorded already (the reply to an
# earlier call was lost with its connection); 0 when the job was no longer in
# flight (recovered after this slot's lease lapsed): nothing is recorded then.
#   KEYS: in-flight, target list, retry due set, last outcome
#   ARGV: payload as taken, record, cap (0: none), due ms ("" unless a retry),
#         attempt token, token TTL ms
_FINISH = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  if redis.call('GET', KEYS[4]) == ARGV[5] then
    -- A write (the same token, its TTL renewed), so that a WAIT after this
    -- call counts the replicas that have the record the earlier one made.
    redis.call('SET', KEYS[4], ARGV[5], 'PX', tonumber(ARGV[6]))
    return 2
  end
  return 0
end
redis.call('SET', KEYS[4], ARGV[5], 'PX', tonumber(ARGV[6]))
if ARGV[4] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
else
  redis.call('LPUSH', KEYS[2], ARGV[2])
  local cap = tonumber(ARGV[3])
  if cap > 0 then redis.call('LTRIM', KEYS[2], 0, cap - 1) end
end
return 1
"""

# Move retries whose time has come back to the tail of image:jobs.
#   KEYS: retry list, retry due set, jobs   ARGV: now ms, max to move
_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, job in ipairs(due) do
  redis.call('ZREM', KEYS[2], job)
  if redis.call('LREM', KEYS[1], 1, job) > 0 then redis.call('RPUSH', KEYS[3], job) end
end
return #due
"""

# Take one job back from a slot without a lease (dead, or never registered),
# unless its lease is alive again.
#   KEYS: heartbeat, in-flight, target list
#   ARGV: payload as held, new payload, push to head of jobs ("jobs") or
#         record as failed ("failed"), cap
_RECOVER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if redis.call('LREM', KEYS[2], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[3], ARGV[2])
if ARGV[3] == 'failed' then
  local cap = tonumber(ARGV[4])
  if cap > 0 then redis.call('LTRIM', KEYS[3], 0, cap - 1) end
end
return 1
"""

# Confirm a slot still holds a job, and renew its lease in the same step, so
# that no recovery can take the job between this answer and what the slot
# does next (put the job's outputs in place).
#   KEYS: in-flight, heartbeat   ARGV: payload as taken, lease ms, now ms
_OWNS = """
if redis.call('LPOS', KEYS[1], ARGV[1]) == false then return 0 end
redis.call('SET', KEYS[2], ARGV[3], 'PX', tonumber(ARGV[2]))
return 1
"""

# Forget a dead slot once it holds nothing.   KEYS: heartbeat, in-flight, workers   ARGV: id
_RETIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('LLEN', KEYS[2]) > 0 then return 0 end
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"""


Finish = int  # what _FINISH returns: RECORDED, ALREADY_RECORDED or GONE
RECORDED, ALREADY_RECORDED, GONE = 1, 2, 0


class Queue:
    """The worker's view of the Redis lists (key names in :mod:`keys`)."""

    def __init__(
        self, conn: redis.Redis, done_cap: int = 10_000, failed_cap: int = 10_000, acks: Acks | None = None
    ) -> None:
        self.conn = conn
        self.acks = acks or Acks()
        self.done_cap = done_cap
        self.failed_cap = failed_cap
        self._finish = conn.register_script(_FINISH)
        self._promote = conn.register_script(_PROMOTE)
        self._recover = conn.register_script(_RECOVER)
        self._retire = conn.register_script(_RETIRE)
        self._owns = conn.register_script(_OWNS)

    # -- a worker slot's own job -------------------------------------------
    def take(self, worker_id: str, timeout: float) -> bytes | None:
        """The oldest pending job, moved into this slot's in-flight list; None on timeout.

        If the connection drops after Redis moved the job but before the reply
        arrives, the job is in the list and this raises: the slot then reads
        its list (:meth:`held`) before taking anything else."""
        return cast(bytes | None, self.conn.blmove(keys.JOBS, keys.processing(worker_id), timeout, "LEFT", "RIGHT"))  # type: ignore[arg-type]  # a float timeout is valid

    def held(self, worker_id: str) -> list[bytes]:
        return cast(list[bytes], self.conn.lrange(keys.processing(worker_id), 0, -1))

    def owns(self, worker_id: str, raw: bytes, ttl_ms: int) -> bool:
        """The job is still in this slot's in-flight list (nobody took it over
        after a lapsed lease), and the lease is renewed for ``ttl_ms``."""
        return bool(
            self._owns(keys=[keys.processing(worker_id), keys.heartbeat(worker_id)], args=[raw, ttl_ms, now_ms()])
        )

    def _record(
        self, worker_id: str, raw: bytes, target: str, record: dict[str, Any], cap: int, due: str, token: str
    ) -> Finish:
        """Record an outcome; with ``acks``, only once the replicas have it
        (else NotAcknowledged: the caller records again, which the attempt's
        token makes a no-op on the primary, and waits again)."""
        script_keys = [keys.processing(worker_id), target, keys.RETRY_DUE, keys.last_outcome(worker_id)]
        args: list[bytes | str | int] = [raw, dumps(record), cap, due, token, 24 * 3600 * 1000]
        if not self.acks.replicas:
            return int(self._finish(keys=script_keys, args=args))
        # WAIT counts the replicas that have this connection's writes: it must
        # follow the script on the same connection, hence one pipeline.
        pipe = self.conn.pipeline(transaction=False)
        self._finish(keys=script_keys, args=args, client=pipe)
        pipe.execute_command("WAIT", self.acks.replicas, self.acks.timeout_ms)  # type: ignore[no-untyped-call]
        result, acked = pipe.execute()
        if int(result) != GONE:
            acknowledged(self.acks, int(acked))
        return int(result)

    def done(self, worker_id: str, raw: bytes, record: dict[str, Any], token: str = "") -> Finish:
        return self._record(worker_id, raw, keys.DONE, record, self.done_cap, "", token)

    def failed(self, worker_id: str, raw: bytes, record: dict[str, Any], token: str = "") -> Finish:
        return self._record(worker_id, raw, keys.FAILED, record, self.failed_cap, "", token)

    def retry(self, worker_id: str, raw: bytes, payload: dict[str, Any], due_ms: int, token: str = "") -> Finish:
        return self._record(worker_id, raw, keys.RETRY, payload, 0, str(due_ms), token)

    def give_back(self, worker_id: str) -> list[bytes]:
        """Put the jobs this slot holds back at the head of image:jobs, unchanged;
        returns them."""
        moved = []
        while (raw := self.conn.lmove(keys.processing(worker_id), keys.JOBS, "RIGHT", "LEFT")) is not None:
            moved.append(cast(bytes, raw))
        return moved

    def may_unblock(self, name: str) -> bool:
        """Whether this Redis user may name its connections and end blocking
        reads (CLIENT SETNAME, LIST and UNBLOCK); names this connection
        ``name`` on the way."""
        try:
            self.conn.client_setname(name)
            self.conn.client_list()
            self.conn.client_unblock(0)  # no such client: a no-op where allowed
        except redis.ResponseError:
            return False
        return True

    def unblock(self, worker_ids: list[str]) -> None:
        """End the blocking reads of these slots now, as if they had timed out.
        Their connections are found by name (see ``connector``), so this is
        for a user :meth:`may_unblock` allowed; should the ACL change since,
        the reads end on their timeout instead."""
        names = set(worker_ids)
        try:
            for client in self.conn.client_list():
                if client.get("name") in names:
                    self.conn.client_unblock(int(client["id"]))
        except redis.ResponseError:
            pass

    # -- leases ----------------------------------------------------------
    def beat(self, worker_ids: list[str], ttl_ms: int) -> None:
        """Renew the slots' leases and (re-)register them. Registering on every
        beat matters after Redis lost its data: a slot missing from
        image:workers would never have its jobs recovered if it died."""
        pipe = self.conn.pipeline(transaction=True)
        for wid in worker_ids:
            pipe.set(keys.heartbeat(wid), str(now_ms()), px=ttl_ms)
        pipe.sadd(keys.WORKERS, *worker_ids)
        pipe.execute()

    def unregister(self, worker_ids: list[str]) -> None:
        pipe = self.conn.pipeline(transaction=True)
        for wid in worker_ids:
            pipe.delete(keys.heartbeat(wid))
        pipe.srem(keys.WORKERS, *worker_ids)
        pipe.execute()

    # -- housekeeping, done by every live worker ------------------------------
    def promote_due(self, limit: int = 100) -> int:
        return int(self._promote(keys=[keys.RETRY, keys.RETRY_DUE, keys.JOBS], args=[now_ms(), limit]))

    def _without_lease(self, ids: list[str]) -> list[str]:
        if not ids:
            return []
        pipe = self.conn.pipeline(transaction=False)
        for wid in ids:
            pipe.exists(keys.heartbeat(wid))
        return [wid for wid, alive in zip(ids, pipe.execute(), strict=True) if not alive]

    def dead_workers(self) -> list[str]:
        """Registered slots whose lease has lapsed."""
        return self._without_lease(sorted(text(x) for x in self.conn.smembers(keys.WORKERS)))

    def orphaned_slots(self) -> list[str]:
        """Slots, registered or not, with an in-flight list and no lease: what a
        slot left behind when Redis lost the registry, or a list that a lost
        reply filled after its process had stopped. Scans the keyspace, so it
        runs less often than :meth:`dead_workers`."""
        prefix = len(keys.processing(""))
        ids = sorted({text(k)[prefix:] for k in self.conn.scan_iter(match=keys.processing("*"), count=1000)})
        return self._without_lease(ids)

    def recover(self, dead_id: str, raw: bytes, payload: str, to_failed: bool) -> int:
        """Move one held job of a slot without a lease: 1 moved, 0 gone already, -1 lease alive."""
        target = keys.FAILED if to_failed else keys.JOBS
        return int(
            self._recover(
                keys=[keys.heartbeat(dead_id), keys.processing(dead_id), target],
                args=[raw, payload, "failed" if to_failed else "jobs", self.failed_cap],
            )
        )

    def retire(self, dead_id: str) -> bool:
        return bool(
            self._retire(keys=[keys.heartbeat(dead_id), keys.processing(dead_id), keys.WORKERS], args=[dead_id])
        )

    # -- operator tools --------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Lengths, jobs in flight, live workers and the oldest pending job's age."""
        conn = self.conn
        pipe = conn.pipeline(transaction=False)
        for key in (keys.JOBS, keys.RETRY, keys.DONE, keys.FAILED):
            pipe.llen(key)
        pipe.lindex(keys.JOBS, 0)
        pipe.smembers(keys.WORKERS)
        jobs, retry, done, failed, oldest, workers = pipe.execute()
        in_flight = sum(conn.llen(k) for k in conn.scan_iter(match=keys.processing("*"), count=500))
        live = len(workers) - len(self._without_lease([text(w) for w in workers]))
        age: float | None = None
        if oldest is not None:
            try:
                ts = json.loads(oldest).get("timestamp")
                if isinstance(ts, (int, float)) and not isinstance(ts, bool) and ts > 0:
                    age = round(time.time() - ts / 1000, 1)
            except (ValueError, AttributeError, RecursionError):
                pass
        return {
            "jobs": jobs,
            "retry": retry,
            "done": done,
            "failed": failed,
            "inFlight": in_flight,
            "liveWorkers": live,
            "registeredWorkers": len(workers),
            "oldestPendingAgeSeconds": age,
        }
