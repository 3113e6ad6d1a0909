"""Prometheus metrics and health endpoints of one worker process.

``/metrics`` (Prometheus text format), ``/healthz`` (Redis reachable and the
main loop alive: 200 or 503) and ``/readyz`` (registered and taking jobs)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

STAGES = ("read", "decode", "kernels", "encode", "write")


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.jobs = Counter("fastimg_jobs", "Job outcomes recorded by this process", ["outcome", "reason"], registry=r)
        self.stage = Histogram("fastimg_stage_seconds", "Time per pipeline stage of one job", ["stage"], registry=r,
                               buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.job = Histogram("fastimg_job_seconds", "Time from taking a job to recording its outcome", registry=r,
                             buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.queue = Gauge("fastimg_queue_length", "Length of each queue list", ["queue"], registry=r)
        self.in_flight = Gauge("fastimg_in_flight", "Jobs in flight, all workers", registry=r)
        self.busy = Gauge("fastimg_busy_slots", "Slots of this process working on a job", registry=r)
        self.live_workers = Gauge("fastimg_live_workers", "Worker slots with a live lease", registry=r)
        self.recovered = Counter("fastimg_recovered_jobs", "Jobs taken back from dead workers", registry=r)
        self.redis_errors = Counter("fastimg_redis_errors", "Redis errors (each followed by a backoff and a reconnect)",
                                    registry=r)
        self.backend = Info("fastimg_backend", "Kernel backend in use", registry=r)

    def observe_stages(self, timings_ms: Dict[str, float]) -> None:
        for stage in STAGES:
            if stage in timings_ms:
                self.stage.labels(stage).observe(timings_ms[stage] / 1000)


class HealthServer:
    """Serves the endpoints on a daemon thread."""

    def __init__(self, port: int, metrics: Metrics, healthy: Callable[[], bool], ready: Callable[[], bool],
                 host: str = "0.0.0.0") -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path == "/metrics":
                    body, code, ctype = generate_latest(metrics.registry), 200, CONTENT_TYPE_LATEST
                elif self.path in ("/healthz", "/readyz"):
                    ok = healthy() if self.path == "/healthz" else ready()
                    body, code, ctype = (b"ok\n" if ok else b"unavailable\n"), (200 if ok else 503), "text/plain"
                else:
                    body, code, ctype = b"not found\n", 404, "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # scrapes are not worth a log line
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        outer.thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)
        outer.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def fresh(timestamp: float, max_age: float) -> bool:
    return time.monotonic() - timestamp <= max_age
