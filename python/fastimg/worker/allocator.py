"""The worker process's memory allocator settings (no Redis import, so
benchmarks on machines without the redis package can use them too)."""

from __future__ import annotations

import ctypes
import os


def tune_malloc() -> None:
    """glibc settings for a process that runs many alike jobs on many threads.

    By default glibc gives every allocation above a threshold its own mmap and
    hands freed memory at the top of a thread's heap back to the system, so a
    worker thread page-faulted its way through fresh memory on every job:
    8,000 faults (9 ms of a 52 ms decode) per 12 MP JPEG, measured. Jobs are
    alike, so what one frees is what the next needs: the thresholds go up.
    With memory kept, every malloc arena holds on to its own peak, and glibc
    makes up to 8 per core for the worker's threads: two are enough (RSS
    after 1,000 jobs at -workers 2: 204 MB with the default, 153 MB with 2).
    Each setting an operator made in the environment (MALLOC_ARENA_MAX,
    MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_) wins; other C libraries
    are left alone."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    # option numbers from glibc's malloc.h
    for env, option, value in (
        ("MALLOC_TRIM_THRESHOLD_", -1, 256 << 20),
        ("MALLOC_MMAP_THRESHOLD_", -3, 32 << 20),  # glibc's largest
        ("MALLOC_ARENA_MAX", -8, 2),
    ):
        if env not in os.environ:
            mallopt(option, value)
