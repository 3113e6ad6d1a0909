"""Prometheus metrics and health endpoints of one worker process.

``/metrics`` (Prometheus text format), ``/healthz`` (Redis reachable and the
main loop alive: 200 or 503) and ``/readyz`` (registered, not stopping, every
slot alive). The server binds to loopback unless told otherwise, serves a
bounded number of connections at once and drops clients that stall, so a
port scan or a slow client can neither exhaust the process's file
descriptors nor starve its jobs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

import fastimg

STAGES = ("read", "admit", "decode", "kernels", "encode", "write")
MAX_CONNECTIONS = 16  # beyond this, new connections are closed at once
READ_TIMEOUT = 5.0  # seconds a client may take to send its request


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.jobs = Counter("fastimg_jobs", "Job outcomes recorded by this process", ["outcome", "reason"], registry=r)
        self.stage = Histogram(
            "fastimg_stage_seconds",
            "Time per pipeline stage of one job",
            ["stage"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.job = Histogram(
            "fastimg_job_seconds",
            "Time from taking a job to recording its outcome",
            registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.queue = Gauge("fastimg_queue_length", "Length of each queue list", ["queue"], registry=r)
        self.in_flight = Gauge("fastimg_in_flight", "Jobs in flight, all workers", registry=r)
        self.busy = Gauge("fastimg_busy_slots", "Slots of this process working on a job", registry=r)
        self.live_slots = Gauge("fastimg_live_slots", "Slots of this process alive to take jobs", registry=r)
        self.slot_restarts = Counter("fastimg_slot_restarts", "Slots restarted after dying unexpectedly", registry=r)
        self.live_workers = Gauge("fastimg_live_workers", "Worker slots with a live lease", registry=r)
        self.recovered = Counter("fastimg_recovered_jobs", "Jobs taken back from slots without a lease", registry=r)
        self.redis_errors = Counter(
            "fastimg_redis_errors", "Redis errors (each followed by a backoff and a reconnect)", registry=r
        )
        self.memory_budget = Gauge(
            "fastimg_memory_budget_bytes", "Memory the jobs of this process may use at once", registry=r
        )
        self.memory_used = Gauge(
            "fastimg_memory_admitted_bytes", "Estimated memory of the jobs admitted now", registry=r
        )
        self.backend = Info("fastimg_backend", "Kernel backend in use", registry=r)
        self._backend_line = ""
        self._backend_lock = threading.Lock()

    def backend_changed(self) -> str | None:
        """The kernels' backend line, when it differs from the one last seen
        (a sticky CUDA error moves them to the CPU for the rest of the
        process), with the metric updated; None when it is the same."""
        info = fastimg.backends()
        line = info.describe()
        with self._backend_lock:
            if line == self._backend_line:
                return None
            self._backend_line = line
        self.backend.info({"backend": info.default, "device": info.cuda_device or "", "reason": info.cuda_reason or ""})
        return line

    def observe_stages(self, timings_ms: dict[str, float]) -> None:
        for stage in STAGES:
            if stage in timings_ms:
                self.stage.labels(stage).observe(timings_ms[stage] / 1000)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any) -> None:
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: closed at once, no thread, no descriptor kept
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away or stalled is not worth a traceback in the job log


class HealthServer:
    """Serves the endpoints on a daemon thread."""

    def __init__(
        self,
        port: int,
        metrics: Metrics,
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
        host: str = "127.0.0.1",
    ) -> None:
        class Handler(BaseHTTPRequestHandler):
            timeout = READ_TIMEOUT

            def do_GET(self) -> None:
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
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args: object) -> None:  # scrapes are not worth a log line
                pass

        self.server = _Server((host, port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def fresh(timestamp: float, max_age: float) -> bool:
    return time.monotonic() - timestamp <= max_age
