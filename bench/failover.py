"""What a Sentinel failover loses with jobs flowing, with and without WAIT
acknowledgement (``wait_replicas=1`` in the URL), and what the
acknowledgement costs when nothing fails.

    python bench/failover.py [--runs 3] [--gaps 0 0.5] [--samples 400]

Each run: a primary, two replicas (each reaching the primary through a
proxy) and three Sentinels on loopback (tests/sentinel_set.py); a producer
queueing an upload every 5 ms through ``Producer.from_url``; two workers of
two slots each. Once 60 jobs are done, the proxies stop delivering the
replication stream (a partition the replicas do not notice), ``gap`` seconds
later the primary is SIGKILLed, and the Sentinels promote a replica, which
lacks the last ``gap`` seconds of writes. When the queue has drained:

  lost       jobs the producer was told were queued that never ran (an RPUSH lost)
  rerun      jobs made twice because a record of theirs was lost (a done
             record gone, or the take that preceded it)
  unconfirmed  jobs the producer reported as not confirmed (None), and how many ran

Then the latency of ``Producer.enqueue`` and of recording an outcome
(``Queue.done``) on the same topology without a failover, with and without
acknowledgement, interleaved: medians and 99th percentiles in ms."""

from __future__ import annotations

import argparse
import logging
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests")]

from conftest import make_photo, running_worker  # noqa: E402
from redis_server import wait_for  # noqa: E402
from sentinel_set import Flow, SentinelSet, outcomes  # noqa: E402

from fastimg.producer import Producer, store_upload  # noqa: E402
from fastimg.queue import keys  # noqa: E402
from fastimg.queue.address import Acks  # noqa: E402
from fastimg.queue.connect import client  # noqa: E402
from fastimg.queue.lists import Queue  # noqa: E402


class Made(logging.Handler):
    """Counts the successful attempts of each job from the workers' log."""

    def __init__(self) -> None:
        super().__init__()
        self.count: Counter = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "completed successfully" in text:
            self.count[text.split("Job ", 1)[1].split(" ", 1)[0]] += 1


def drained(conn) -> bool:
    in_flight = sum(conn.llen(k) for k in conn.scan_iter(match=keys.processing("*")))
    return conn.llen(keys.JOBS) + conn.llen(keys.RETRY) + in_flight == 0


class Link:
    """A TCP proxy between the replicas and the primary that can stop
    delivering what the primary sends (a partition the replicas do not
    notice): they fall behind by what the primary takes meanwhile."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.cut = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            downstream, _ = self.server.accept()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                downstream.close()
                continue
            threading.Thread(target=self._pump, args=(downstream, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_primary: bool) -> None:
        try:
            while data := source.recv(65536):
                if not (from_primary and self.cut.is_set()):
                    sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            s.close()


def one_failover(acks: bool, gap: float, photo: bytes, made: Made) -> dict:
    made.count.clear()
    links: list[Link] = []

    def link(port: int) -> int:
        links.append(Link(port))
        return links[-1].port

    # A replica reaching the primary through a proxy looks misconfigured to
    # Sentinel, which repoints it after failover-timeout: longer than a run.
    topology = SentinelSet(replicas=2, failover_timeout_ms=120_000, link=link)
    uploads = Path(tempfile.mkdtemp(prefix="fastimg-failover-"))
    try:
        params = {"wait_replicas": 1, "wait_timeout_ms": 500} if acks else {}
        url = topology.full_url(**params)
        flow = Flow(url, uploads, photo, every=0.005)
        settings = {"workers": 2, "heartbeat_ttl": 15.0, "max_retries": 10}
        with running_worker(url, **settings), running_worker(url, **settings):
            old = topology.primary_port()
            wait_for(lambda: topology.node(old).llen(keys.DONE) >= 60, timeout=60)
            for cut in links:
                cut.cut.set()
            time.sleep(gap)
            topology.kill(old)
            new = wait_for(lambda: (p := topology.primary_port()) not in (None, old) and p, timeout=60)
            time.sleep(3)  # jobs flowing on the new primary
            flow.end()
            primary = topology.node(new)
            wait_for(lambda: drained(primary), timeout=120)
            time.sleep(1)
        seen = outcomes(primary)
        return {
            "confirmed": len(flow.confirmed),
            "lost": sum(1 for j in flow.confirmed if not seen[j]),
            "rerun": sum(1 for n in made.count.values() if n > 1),
            "unconfirmed": len(flow.unconfirmed),
            "unconfirmed_ran": sum(1 for j in flow.unconfirmed if seen[j]),
            "duplicates": sum(1 for n in seen.values() if n > 1),
        }
    finally:
        topology.close()


def latencies(photo: bytes, samples: int) -> dict:
    topology = SentinelSet(replicas=2)
    uploads = Path(tempfile.mkdtemp(prefix="fastimg-latency-"))
    try:
        conn = client(topology.full_url())
        modes = {"async": Acks(), "wait 1": Acks(1, 1000)}
        producers = {m: Producer(conn, a) for m, a in modes.items()}
        queues = {m: Queue(conn, acks=a) for m, a in modes.items()}
        enqueue: dict = {m: [] for m in modes}
        record: dict = {m: [] for m in modes}
        path = store_upload(photo, uploads, "user1", "p.jpg")
        for _ in range(samples):
            for m in modes:
                t0 = time.perf_counter()
                assert producers[m].enqueue(path, "user1", uploads, ["thumbnail"])
                enqueue[m].append((time.perf_counter() - t0) * 1000)
                raw = conn.lpop(keys.JOBS)
                conn.rpush(keys.processing("bench-0"), raw)
                t0 = time.perf_counter()
                queues[m].done("bench-0", raw, {"jobId": "x", "status": "done"}, secrets.token_hex(8))
                record[m].append((time.perf_counter() - t0) * 1000)
        conn.delete(keys.DONE)

        def summary(values: list) -> str:
            ordered = sorted(values)
            return f"median {statistics.median(ordered):.3f} ms, p99 {ordered[int(len(ordered) * 0.99)]:.3f} ms"

        return {f"{what} ({m})": summary(v[m]) for what, v in (("enqueue", enqueue), ("record", record)) for m in modes}
    finally:
        topology.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--gaps", type=float, nargs="+", default=[0.0, 0.5])
    ap.add_argument("--samples", type=int, default=400)
    args = ap.parse_args()
    made = Made()
    logging.getLogger("fastimg.worker").addHandler(made)
    logging.getLogger("fastimg.worker").setLevel(logging.INFO)
    logging.getLogger("fastimg.producer").setLevel(logging.ERROR)
    photo = make_photo(Path(tempfile.mkdtemp()) / "p.jpg", size=(64, 48)).read_bytes()
    for gap in args.gaps:
        for acks in (False, True):
            totals: Counter = Counter()
            for _ in range(args.runs):
                totals.update(one_failover(acks, gap, photo, made))
            mode = "wait_replicas=1" if acks else "asynchronous"
            print(f"gap {gap}s, {mode}, {args.runs} failovers: {dict(totals)}", flush=True)
    for name, value in latencies(photo, args.samples).items():
        print(f"{name}: {value}", flush=True)


if __name__ == "__main__":
    main()
