"""One job's work, step by step: read the upload, decode it, run the kernels,
encode and write each output. Raises JobError subclasses for every failure a
job can cause; anything else is a bug."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor, as_completed, wait
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from .admission import Budget, estimate
from .decode import decode_image, header
from .errors import ResourceExhausted
from .job import Job
from .limits import Limits
from .read import read_input
from .render import render_each
from .spec import OutputSpec
from .write import Output, Writer, encode_and_write


@dataclass
class Result:
    outputs: list[Output] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    input_bytes: int = 0
    damage: str | None = None  # outputs made from a partial image (keepPartial): why it is partial


class _Clock:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()

    def add(self, stage: str, ms: float) -> None:
        self.timings[stage] = round(self.timings.get(stage, 0.0) + ms, 2)

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.add(stage, (now - self._t) * 1000)
        self._t = now


def encoder_pool() -> ThreadPoolExecutor:
    """Threads for encoding outputs, one per core (libwebp runs without the GIL).
    Made by whoever runs jobs, and shared by all of its jobs."""
    return ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="fastimg-encode")


class _Inline(Executor):
    """Runs each submitted call at once, in the caller's thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the future
            fut.set_exception(e)
        return fut


_INLINE = _Inline()


def process(
    job: Job,
    limits: Limits = Limits(),
    log: Callable[[str], None] | None = None,
    on_output: Callable[[str], None] | None = None,
    encoders: Executor | None = None,
    writer: Writer | None = None,
    budget: Budget | None = None,
    still_ours: Callable[[], bool] | None = None,
    remove_stale: bool = False,
) -> Result:
    """Make the outputs of ``job`` and put them in place together.

    ``log`` receives the seed's per-step lines, ``on_output`` each operation's
    name once it is encoded. Outputs are encoded on ``encoders`` (see
    :func:`encoder_pool`), or in this thread. ``writer`` puts them in place
    (a durable one of its own by default); ``budget`` admits the job's
    estimated memory before decoding; ``still_ours`` is asked just before the
    outputs land (see :meth:`OutputDir.commit`); ``remove_stale`` removes this
    job's temporary files left by a killed attempt."""
    say = log or (lambda _msg: None)
    clock = _Clock()
    result = Result()
    data = read_input(job.input_path, limits, job.input_at)
    result.input_bytes = len(data)
    say(f"Input image read: {len(data)} bytes")
    clock.lap("read")
    specs = [job.spec[op] for op in job.operations]
    # An empty file is left to decode, which names it for what it most often is
    # (an upload still being written).
    admitted: AbstractContextManager[None] = nullcontext()
    if budget is not None and data:
        admitted = budget.admit(estimate(header(data, limits), specs, len(data)), f"job {job.job_id}")
    try:
        with admitted:
            clock.lap("admit")
            _make(
                job,
                data,
                limits,
                specs,
                say,
                on_output,
                encoders or _INLINE,
                writer or Writer(),
                still_ours,
                remove_stale,
                clock,
                result,
            )
    except MemoryError:
        raise ResourceExhausted("out-of-memory", "out of memory while making the outputs") from None
    result.timings_ms = clock.timings
    return result


def _make(
    job: Job,
    data: bytes,
    limits: Limits,
    specs: list[OutputSpec],
    say: Callable[[str], None],
    on_output: Callable[[str], None] | None,
    encoders: Executor,
    writer: Writer,
    still_ours: Callable[[], bool] | None,
    remove_stale: bool,
    clock: _Clock,
    result: Result,
) -> None:
    keep_partial = limits.keep_partial if job.keep_partial is None else job.keep_partial
    decoded = decode_image(data, specs, limits, keep_partial)
    pixels, result.damage = decoded.pixels, decoded.damage
    if decoded.damage:
        say(f"Input image is damaged, kept as decoded: {decoded.damage}")
    del data, decoded
    clock.lap("decode")
    with writer.open(job, remove_stale) as out:
        # Each output is encoded as soon as it is made, on the encoder threads
        # (libwebp runs without the GIL), the largest first: with a second core
        # a job takes about as long as its largest encode plus what comes
        # before it, not the sum of its encodes.
        futures: dict[Future[tuple[Output, float, float]], str] = {}
        try:
            for op, image in render_each(pixels, job.operations, job.spec):
                futures[encoders.submit(encode_and_write, out, op, image, job.spec[op])] = op
        except BaseException:
            wait(futures)  # nothing of this attempt may still be writing when it is retried
            raise
        del pixels
        clock.lap("kernels")
        made: dict[str, Output] = {}
        try:
            for fut in as_completed(futures):
                output, encode_ms, write_ms = fut.result()
                made[output.operation] = output
                clock.add("encode", encode_ms)
                clock.add("write", write_ms)
                if on_output:
                    on_output(output.operation)
        except BaseException:
            wait(futures)
            raise
        t0 = time.perf_counter()
        out.commit(still_ours)
        clock.add("write", (time.perf_counter() - t0) * 1000)
    for op in job.operations:
        o = made[op]
        say(f"Operation {o.operation} complete: {o.path} ({o.bytes} bytes)")
    result.outputs = [made[op] for op in job.operations]
