"""A worker-wide memory budget: each job's peak is estimated from its header
before anything is decoded, and jobs are admitted against the budget, so big
jobs wait for each other instead of failing, or starving the small ones, and a
job that could never fit fails at once as ``too-large`` with the numbers."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from .decode import Header
from .errors import PermanentError
from .spec import OutputSpec, fit_inside

# Bytes per decoded pixel held at the peak, per byte of sample: Pillow keeps
# RGB as 4 bytes a pixel; its image, the array the kernels read and one more
# copy (orientation, colour conversion or 16-bit rounding) can be alive at once.
_DECODE_COPIES = 3
# Allocator and decoder overhead a job adds whatever its size (libjpeg's and
# libwebp's buffers, a thread arena touched for the first time).
_BASE = 80 << 20
_WAIT_BEFORE_PRIORITY = 5.0  # seconds a job waits before smaller ones stop overtaking it


def _jpeg_scale(h: Header, specs: Sequence[OutputSpec]) -> int:
    """The DCT scale decode uses for a JPEG: the largest of 1/2, 1/4, 1/8 that
    still covers every output."""
    sizes = [fit_inside(h.width, h.height, s.width, s.height) for s in specs]
    need_w, need_h = max(w for w, _ in sizes), max(hh for _, hh in sizes)
    for scale in (8, 4, 2):
        if h.width // scale >= need_w and h.height // scale >= need_h:
            return scale
    return 1


def estimate(h: Header, specs: Sequence[OutputSpec], input_bytes: int) -> int:
    """Bytes a job is expected to use at its peak; measured to stay above the
    real peak in tests/test_image_admission.py."""
    scale = _jpeg_scale(h, specs) if h.format == "JPEG" else 1
    pixels = math.ceil(h.width / scale) * math.ceil(h.height / scale)
    if h.format == "SVG":  # drawn at the largest output's size (image/svg.py)
        sizes = [fit_inside(h.width, h.height, s.width, s.height) for s in specs]
        pixels = max(w for w, _ in sizes) * max(hh for _, hh in sizes)
    per_pixel = (4 if h.bands >= 3 else 1) * h.bytes_per_sample * _DECODE_COPIES
    if h.bytes_per_sample > 1:
        per_pixel += 32 * h.bands  # 16-bit rounding works on wide integers or floats, with temporaries
    outputs = 0
    for s in specs:
        w, hh = fit_inside(h.width, h.height, s.width, s.height)
        outputs += w * hh * 40  # the output, its resized source, float rows, the encoder's planes
    return _BASE + input_bytes + pixels * per_pixel + outputs


def default_budget() -> int:
    """Three quarters of the memory this process may use: the cgroup's limit
    when one is set, else what the machine has available now."""
    limit = None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            limit = int(text)
            break
    if limit is None:
        try:
            with open("/proc/meminfo") as f:
                info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.split()[1].isdigit()}
            limit = info.get("MemAvailable", info.get("MemTotal"))
        except (OSError, IndexError, ValueError):
            limit = None
    if limit is None:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(limit * 3 // 4)


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.0f} MB"


class Budget:
    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self.peak = 0  # the most ever admitted at once, for tests and metrics
        self._cond = threading.Condition()
        self._first_waiting: object | None = None

    @contextmanager
    def admit(self, need: int, what: str, cancelled: Callable[[], bool] = lambda: False) -> Iterator[None]:
        """Hold ``need`` bytes of the budget for the block; wait until they fit."""
        if need > self.total:
            raise PermanentError(
                "too-large",
                f"{what} needs about {_mb(need)} of memory; the worker's budget is {_mb(self.total)} (--memory-budget)",
            )
        me = object()
        since = time.monotonic()
        with self._cond:
            while self.used + need > self.total or self._first_waiting not in (None, me):
                if cancelled():
                    if self._first_waiting is me:
                        self._first_waiting = None
                    raise InterruptedError("stopped while waiting for memory")
                if self._first_waiting is None and time.monotonic() - since > _WAIT_BEFORE_PRIORITY:
                    self._first_waiting = me  # no longer overtaken by smaller jobs
                self._cond.wait(0.2)
            if self._first_waiting is me:
                self._first_waiting = None
            self.used += need
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            with self._cond:
                self.used -= need
                self._cond.notify_all()
