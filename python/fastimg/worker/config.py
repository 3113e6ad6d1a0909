"""Every setting of a worker process."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..image.limits import Limits
from ..image.spec import SPEC_V1, OutputSpec


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
