"""Encoding each output as WebP and writing it into place atomically."""

from __future__ import annotations

import io
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Tuple

import numpy as np
from PIL import Image

from .errors import TransientError
from .jobs import Job
from .outputs import OutputSpec


@dataclass
class Output:
    operation: str
    path: str
    bytes: int
    width: int
    height: int


def encode_webp(pixels: np.ndarray, s: OutputSpec) -> bytes:
    buf = io.BytesIO()
    # Built from bare pixels, so no metadata (EXIF, ICC, XMP) is carried over.
    Image.fromarray(pixels).save(buf, "WEBP", quality=s.quality, method=s.method)
    return buf.getvalue()


def write_atomic(directory: str, name: str, data: bytes) -> str:
    """Write ``data`` to ``directory/name`` so that readers see the old file or the
    whole new one, never a part; a symlink at that name is replaced, not followed."""
    final = os.path.join(directory, name)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return final


def encode_and_write(job: Job, op: str, pixels: np.ndarray, s: OutputSpec) -> Tuple[Output, float, float]:
    t0 = time.perf_counter()
    encoded = encode_webp(pixels, s)
    t1 = time.perf_counter()
    try:
        path = write_atomic(job.output_dir, f"{job.job_id}_{op}.webp", encoded)
    except OSError as e:
        raise TransientError("io-error", f"cannot write output: {e}") from None
    t2 = time.perf_counter()
    h, w = pixels.shape[:2]
    return Output(op, path, len(encoded), w, h), (t1 - t0) * 1000, (t2 - t1) * 1000
