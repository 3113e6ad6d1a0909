"""`gpu-image-worker process PHOTO...`: the worker's pipeline on files, without Redis."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, TextIO

from ..image.errors import JobError
from ..image.job import Job
from ..image.limits import Limits
from ..image.spec import OPERATIONS, OutputSpec, SpecError
from ..queue.jobs import parse_job
from .options import add_output_options, output_spec, positive_int

if TYPE_CHECKING:
    from ..image.pipeline import Result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpu-image-worker process",
        description="Make the thumbnail, blur and low-quality WebP files of each PHOTO with "
        "the worker's pipeline, without Redis. Outputs are DIR/<name>_<operation>.webp, "
        "<name> being the file name without its extension. Exits 1 when any file failed.",
    )
    p.add_argument("photos", nargs="+", metavar="PHOTO")
    p.add_argument(
        "-o",
        "--output-dir",
        default="processed",
        metavar="DIR",
        help="where outputs go (created if missing; default ./processed)",
    )
    p.add_argument(
        "--ops", default=",".join(OPERATIONS), help=f"comma-separated operations (default {','.join(OPERATIONS)})"
    )
    p.add_argument(
        "-j",
        "--jobs",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="files processed at once (default: the number of CPUs)",
    )
    p.add_argument("--max-input-bytes", type=positive_int, default=Limits.max_input_bytes, metavar="N")
    p.add_argument("--max-pixels", type=positive_int, default=Limits.max_pixels, metavar="N")
    add_output_options(p)
    return p


class Progress:
    """A one-line bar on a terminal; silent otherwise."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.enabled = total > 1 and stream.isatty()
        self.lock = threading.Lock()

    def step(self) -> None:
        with self.lock:
            self.done += 1
            if self.enabled:
                filled = 30 * self.done // self.total
                self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} files")
                if self.done == self.total:
                    self.stream.write("\n")
                self.stream.flush()


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    unknown = [op for op in ops if op not in OPERATIONS]
    if unknown or not ops:
        print(f"gpu-image-worker process: error: --ops takes some of {', '.join(OPERATIONS)}", file=sys.stderr)
        return 2
    out_dir = os.path.abspath(args.output_dir)
    try:
        spec = output_spec(args)
    except (ValueError, SpecError) as e:
        print(f"gpu-image-worker process: error: {e}", file=sys.stderr)
        return 2
    limits = Limits(args.max_input_bytes, args.max_pixels, args.max_frames, args.input_formats, args.keep_partial)
    jobs, failures = _jobs(args.photos, out_dir, ops, spec)
    progress = Progress(len(args.photos))
    for _ in failures:
        progress.step()
    started = time.perf_counter()
    results = _run(jobs, limits, args.jobs, progress, failures)
    elapsed = time.perf_counter() - started
    outputs = [o for _, r in results for o in r.outputs]
    print(
        f"{len(args.photos)} files in {elapsed:.2f}s: {len(results)} ok, {len(failures)} failed; "
        f"{len(outputs)} outputs, {_human(sum(o.bytes for o in outputs))} in {out_dir}"
    )
    for op in ops:
        made = [o for o in outputs if o.operation == op]
        if made:
            print(f"  {op:<12} {len(made):>5} files {_human(sum(o.bytes for o in made)):>10}")
    damaged = sorted((photo, r.damage) for photo, r in results if r.damage)
    if damaged:
        print("damaged (outputs made from what could be decoded):")
        for photo, why in damaged:
            print(f"  {photo}: {why}")
    if failures:
        print("failed:")
        for photo, reason, message in sorted(failures):
            print(f"  {photo}: {reason}: {message}")
    return 1 if failures else 0


Failure = tuple[str, str, str]  # (photo, reason, message)


def _jobs(
    photos: Sequence[str], out_dir: str, ops: list[str], spec: dict[str, OutputSpec]
) -> tuple[list[tuple[str, Job]], list[Failure]]:
    """A job per photo, checked as the worker checks a payload; the photos that cannot be one."""
    jobs, failures = [], []
    names = set()
    for photo in photos:
        path = os.path.abspath(photo)
        name = os.path.splitext(os.path.basename(path))[0]
        payload = json.dumps({"jobId": name, "inputPath": path, "outputDir": out_dir, "operations": ops})
        try:
            if name in names:
                raise JobError("duplicate-name", f"another input also makes outputs named {name}_*")
            jobs.append((photo, parse_job(payload, (), spec)))
            names.add(name)
        except JobError as e:
            failures.append((photo, e.reason, str(e)))
    return jobs, failures


def _run(
    jobs: list[tuple[str, Job]], limits: Limits, threads: int, progress: Progress, failures: list[Failure]
) -> list[tuple[str, Result]]:
    """Process the jobs, ``threads`` at a time; the results, with each failure added to ``failures``."""
    # Loaded once the arguments are known to be good, so that --help and a
    # mistyped flag answer without numpy, Pillow and the kernels.
    from ..image import pipeline

    def one(photo: str, job: Job, encoders: Executor) -> tuple[str, Result | None, JobError | None]:
        try:
            return photo, pipeline.process(job, limits, encoders=encoders), None
        except JobError as e:
            return photo, None, e
        except Exception as e:  # noqa: BLE001 - a bug: this file fails, the batch goes on
            where = traceback.extract_tb(e.__traceback__)[-1]
            at = f"{os.path.basename(where.filename)}:{where.lineno}"
            return photo, None, JobError("internal-error", f"{type(e).__name__}: {e} (at {at})")

    results: list[tuple[str, Result]] = []
    with ThreadPoolExecutor(max_workers=threads) as pool, pipeline.encoder_pool() as encoders:
        for fut in as_completed([pool.submit(one, photo, job, encoders) for photo, job in jobs]):
            photo, result, error = fut.result()
            if error is not None:
                failures.append((photo, error.reason, str(error)))
            elif result is not None:
                results.append((photo, result))
            progress.step()
    return results
