"""One job as the pipeline takes it: what to make, from which file, and where.

The queue parses untrusted payloads into a Job (fastimg.queue.jobs); the
``process`` command builds one per file. The job id becomes part of the
output files' names, so the rule for a safe id is written here, once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .spec import OutputSpec

# No separators, no control characters, not "." or "..". Anything else a
# stored file name can hold (spaces, non-ASCII) is fine, since the seed derives
# jobId from the uploaded file's name.
_UNSAFE_ID = re.compile(r"[/\\\x00-\x1f\x7f]")
MAX_ID_BYTES = 200


def encodable(value: str) -> bool:
    """False for strings with a lone surrogate: valid JSON, but no file name or
    Redis key can hold them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def safe_job_id(job_id: str) -> bool:
    """Whether ``job_id`` can name output files: non-empty, valid Unicode, no
    separator or control character, not "." or "..", at most MAX_ID_BYTES."""
    return (
        bool(job_id)
        and encodable(job_id)
        and not _UNSAFE_ID.search(job_id)
        and job_id not in (".", "..")
        and len(job_id.encode()) <= MAX_ID_BYTES
    )


@dataclass(frozen=True)
class Job:
    fields: dict[str, Any]  # every field, unknown ones included
    job_id: str
    input_path: str
    output_dir: str
    operations: tuple[str, ...]
    retry_count: int
    spec: dict[str, OutputSpec]  # the operator's defaults with the job's params applied
    # With allowed roots: (root, path below it) of the input and the output
    # directory, which the worker opens beneath the root (see confine.py).
    input_at: tuple[str, str] | None = None
    output_at: tuple[str, str] | None = None
    keep_partial: bool | None = None  # the job's keepPartial; None: the worker's --keep-partial
