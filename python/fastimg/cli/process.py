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
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TextIO

from ..image.errors import JobError
from ..image.limits import Limits
from ..image.pipeline import Result, encoder_pool, process
from ..image.spec import OPERATIONS, SpecError
from ..queue.jobs import parse_job
from .options import add_output_options, output_spec, positive_int


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
    limits = Limits(args.max_input_bytes, args.max_pixels, args.max_frames, args.input_formats)

    jobs, failures = [], []
    names = set()
    for photo in args.photos:
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

    progress = Progress(len(args.photos))
    for _ in failures:
        progress.step()
    results: list[tuple[str, Result]] = []
    started = time.perf_counter()

    def run(photo, job):
        try:
            return photo, process(job, limits, encoders=encoders), None
        except JobError as e:
            return photo, None, e
        except Exception as e:  # noqa: BLE001 - a bug: this file fails, the batch goes on
            where = traceback.extract_tb(e.__traceback__)[-1]
            return (
                photo,
                None,
                JobError(
                    "internal-error", f"{type(e).__name__}: {e} (at {os.path.basename(where.filename)}:{where.lineno})"
                ),
            )

    with ThreadPoolExecutor(max_workers=args.jobs) as pool, encoder_pool() as encoders:
        for fut in as_completed([pool.submit(run, photo, job) for photo, job in jobs]):
            photo, result, error = fut.result()
            if error is not None:
                failures.append((photo, error.reason, str(error)))
            else:
                results.append((photo, result))
            progress.step()
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
    if failures:
        print("failed:")
        for photo, reason, message in sorted(failures):
            print(f"  {photo}: {reason}: {message}")
    return 1 if failures else 0
