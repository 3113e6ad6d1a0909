"""A worker's Prometheus metrics and health endpoints (fastimg.worker.metrics)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from conftest import push, running_worker, seed_job
from redis_server import wait_for


def fetch(port: int, path: str):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_and_health_endpoints(r, redis_server, uploads):
    push(r, seed_job(uploads, name="m1"), "junk")
    with running_worker(redis_server.url, metrics_port=0) as w:
        wait_for(lambda: r.llen("image:done") == 1 and r.llen("image:failed") == 1)
        port = w.health.port
        wait_for(lambda: fetch(port, "/healthz")[0] == 200)
        assert fetch(port, "/readyz")[0] == 200
        time.sleep(1.2)  # one sweep updates the queue gauges
        code, text = fetch(port, "/metrics")
        assert code == 200
        for line in (
            'fastimg_jobs_total{outcome="done",reason=""} 1.0',
            'fastimg_jobs_total{outcome="failed",reason="invalid-job"} 1.0',
            'fastimg_queue_length{queue="done"} 1.0',
            "fastimg_in_flight 0.0",
            'fastimg_stage_seconds_count{stage="decode"} 1.0',
            'fastimg_stage_seconds_count{stage="encode"} 1.0',
            "fastimg_redis_errors_total 0.0",
            "fastimg_backend_info{",
            "fastimg_live_workers 1.0",
        ):
            assert line in text, line
        assert fetch(port, "/nope")[0] == 404
        w.stopping.set()
        assert fetch(port, "/readyz")[0] == 503
