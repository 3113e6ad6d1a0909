"""One job's work, step by step: read the upload, decode it, run the kernels,
encode and write each output. Raises JobError subclasses for every failure a
job can cause; anything else is a bug."""

from __future__ import annotations

import os
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from .decode import decode
from .errors import PermanentError, TransientError
from .jobs import Job
from .limits import Limits
from .read import read_input
from .render import render_each
from .write import Output, encode_and_write

@dataclass
class Result:
    outputs: List[Output] = field(default_factory=list)
    timings_ms: Dict[str, float] = field(default_factory=dict)
    input_bytes: int = 0



class _Clock:
    def __init__(self) -> None:
        self.timings: Dict[str, float] = {}
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

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:
            fut.set_exception(e)
        return fut


_INLINE = _Inline()


def process(
    job: Job,
    limits: Limits = Limits(),
    log: Optional[Callable[[str], None]] = None,
    on_output: Optional[Callable[[str], None]] = None,
    encoders: Optional[Executor] = None,
) -> Result:
    """Make the outputs of ``job``. ``log`` receives the seed's per-step lines,
    ``on_output`` each operation's name once its file is in place. Outputs are
    encoded on ``encoders`` (see :func:`encoder_pool`), or in this thread."""
    say = log or (lambda _msg: None)
    clock = _Clock()
    result = Result()
    data = read_input(job.input_path, limits)
    result.input_bytes = len(data)
    say(f"Input image read: {len(data)} bytes")
    clock.lap("read")
    spec = job.spec
    pixels = decode(data, [spec[op] for op in job.operations], limits)
    del data
    clock.lap("decode")
    try:
        os.makedirs(job.output_dir, exist_ok=True)
    except FileExistsError:
        raise PermanentError("not-a-directory", f"outputDir is not a directory: {job.output_dir}") from None
    except OSError as e:
        raise TransientError("io-error", f"cannot create outputDir: {e}") from None
    if not os.path.isdir(job.output_dir):
        raise PermanentError("not-a-directory", f"outputDir is not a directory: {job.output_dir}")
    # Each output is encoded as soon as it is made, on the encoder threads
    # (libwebp runs without the GIL), the largest first: with a second core a
    # job takes about as long as its largest encode plus what comes before it,
    # not the sum of its encodes.
    futures = {}
    try:
        for op, image in render_each(pixels, job.operations, spec):
            futures[(encoders or _INLINE).submit(encode_and_write, job, op, image, spec[op])] = op
    except BaseException:
        wait(futures)  # nothing of this attempt may still be writing when it is retried
        raise
    del pixels
    clock.lap("kernels")
    made: Dict[str, Output] = {}
    for fut in as_completed(futures):
        output, encode_ms, write_ms = fut.result()
        made[output.operation] = output
        clock.add("encode", encode_ms)
        clock.add("write", write_ms)
        say(f"Operation {output.operation} complete: {output.path} ({output.bytes} bytes)")
        if on_output:
            on_output(output.operation)
    result.outputs = [made[op] for op in job.operations]
    result.timings_ms = clock.timings
    return result
