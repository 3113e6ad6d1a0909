"""The job payload: parsing and validation. Paths come from the queue, so they
are untrusted until checked here."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Sequence, Tuple, Union

from .errors import InvalidJob
from .outputs import OPERATIONS, SPEC_V1, OutputSpec, SpecError, apply_overrides

# jobId becomes part of a file name: no separators, no control characters, not
# "." or "..". Anything else a stored file name can hold (spaces, non-ASCII) is
# fine, since the seed derives jobId from the uploaded file's name.
_UNSAFE_ID = re.compile(r"[/\\\x00-\x1f\x7f]")
MAX_ID_BYTES = 200


@dataclass(frozen=True)
class Job:
    fields: Dict[str, Any]  # every field, unknown ones included
    job_id: str
    input_path: str
    output_dir: str
    operations: Tuple[str, ...]
    retry_count: int
    spec: Dict[str, OutputSpec]  # the operator's defaults with the job's params applied


def _is_within(path: str, roots: Sequence[str]) -> bool:
    return any(os.path.commonpath([path, root]) == root for root in roots)


def _checked_path(fields: Dict[str, Any], name: str, roots: Sequence[str]) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidJob(f"{name} must be a non-empty string")
    if "\x00" in value:
        raise InvalidJob(f"{name} contains a NUL byte")
    if not os.path.isabs(value):
        raise InvalidJob(f"{name} must be an absolute path, got {value!r}")
    # Symlinks resolved: a link inside an allowed root that points out of it is
    # refused like the path it points to.
    if roots and not _is_within(os.path.realpath(value), roots):
        raise InvalidJob(f"{name} {value!r} is outside the allowed roots", reason="path-not-allowed")
    return value


def parse_job(
    raw: Union[str, bytes], allowed_roots: Sequence[str] = (), spec: Mapping[str, OutputSpec] = SPEC_V1
) -> Job:
    """Parse and validate one payload; raises InvalidJob naming the bad field.

    ``allowed_roots`` must be absolute, symlink-free paths (see
    :func:`normalise_roots`); empty means any absolute path is accepted.
    """
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        fields = json.loads(text)
    except ValueError as e:
        raise InvalidJob(f"payload is not JSON: {e}") from None
    if not isinstance(fields, dict):
        raise InvalidJob(f"payload must be a JSON object, got {type(fields).__name__}")

    job_id = fields.get("jobId")
    if not isinstance(job_id, str) or not job_id:
        raise InvalidJob("jobId must be a non-empty string")
    if _UNSAFE_ID.search(job_id) or job_id in (".", "..") or len(job_id.encode()) > MAX_ID_BYTES:
        raise InvalidJob(f"jobId {job_id!r} is not a safe file name", reason="unsafe-job-id")

    input_path = _checked_path(fields, "inputPath", allowed_roots)
    output_dir = _checked_path(fields, "outputDir", allowed_roots)

    ops = fields.get("operations")
    if not isinstance(ops, list) or not ops:
        raise InvalidJob("operations must be a non-empty array")
    for op in ops:
        if op not in OPERATIONS:
            raise InvalidJob(f"operations: unknown operation {op!r} (known: {', '.join(OPERATIONS)})")

    timestamp = fields.get("timestamp", 0)
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
        raise InvalidJob("timestamp must be a number (ms since the epoch)")
    retry_count = fields.get("retryCount", 0)
    if isinstance(retry_count, bool) or not isinstance(retry_count, int) or retry_count < 0:
        raise InvalidJob("retryCount must be a non-negative integer")
    try:
        job_spec = apply_overrides(spec, fields.get("params", {}))
    except SpecError as e:
        raise InvalidJob(str(e)) from None

    return Job(
        fields=fields,
        job_id=job_id,
        input_path=input_path,
        output_dir=output_dir,
        operations=tuple(dict.fromkeys(ops)),  # each output once, in the order asked
        retry_count=retry_count,
        spec=job_spec,
    )


def normalise_roots(roots: Sequence[str]) -> Tuple[str, ...]:
    """Allowed roots as absolute, symlink-resolved paths."""
    out = []
    for root in roots:
        if not os.path.isabs(root):
            raise ValueError(f"allowed root must be an absolute path: {root!r}")
        out.append(os.path.realpath(root))
    return tuple(out)
