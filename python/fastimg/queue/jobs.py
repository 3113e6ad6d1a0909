"""The job payload: parsing and validation. Paths come from the queue, so they
are untrusted until checked here."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..image.errors import InvalidJob
from ..image.job import Job, encodable, safe_job_id
from ..image.spec import MAX_JOB_OUTPUT_SIDE, OPERATIONS, SPEC_V1, OutputSpec, SpecError, apply_overrides
from .wire import StrictJSONError, loads


def _checked_path(fields: dict[str, Any], name: str, roots: Sequence[str]) -> tuple[str, tuple[str, str] | None]:
    value = fields.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidJob(f"{name} must be a non-empty string")
    if "\x00" in value:
        raise InvalidJob(f"{name} contains a NUL byte")
    if not encodable(value):
        raise InvalidJob(f"{name} is not valid Unicode (it holds a lone surrogate)")
    if not os.path.isabs(value):
        raise InvalidJob(f"{name} must be an absolute path, got {value!r}")
    if not roots:
        return value, None
    # Symlinks resolved: a link inside an allowed root that points out of it is
    # refused like the path it points to. This check gives the early, clear
    # reason; the worker's opens beneath the root are what enforce it.
    real = os.path.realpath(value)
    for root in roots:
        if os.path.commonpath([real, root]) == root:
            return value, (root, os.path.relpath(real, root))
    raise InvalidJob(f"{name} {value!r} is outside the allowed roots", reason="path-not-allowed")


def parse_job(raw: str | bytes, allowed_roots: Sequence[str] = (), spec: Mapping[str, OutputSpec] = SPEC_V1) -> Job:
    """Parse and validate one payload; raises InvalidJob naming the bad field.

    ``allowed_roots`` must be absolute, symlink-free paths (see
    :func:`normalise_roots`); empty means any absolute path is accepted.
    """
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        fields = loads(text)
    except StrictJSONError as e:
        raise InvalidJob(f"payload is not strict JSON: {e}") from None
    except ValueError as e:
        raise InvalidJob(f"payload is not JSON: {e}") from None
    if not isinstance(fields, dict):
        raise InvalidJob(f"payload must be a JSON object, got {type(fields).__name__}")

    job_id = fields.get("jobId")
    if not isinstance(job_id, str) or not job_id:
        raise InvalidJob("jobId must be a non-empty string")
    if not encodable(job_id):
        raise InvalidJob("jobId is not valid Unicode (it holds a lone surrogate)", reason="unsafe-job-id")
    if not safe_job_id(job_id):
        raise InvalidJob(f"jobId {job_id!r} is not a safe file name", reason="unsafe-job-id")

    input_path, input_at = _checked_path(fields, "inputPath", allowed_roots)
    output_dir, output_at = _checked_path(fields, "outputDir", allowed_roots)

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
    keep_partial = fields.get("keepPartial")
    if keep_partial is not None and not isinstance(keep_partial, bool):
        raise InvalidJob("keepPartial must be true or false")
    try:
        job_spec = apply_overrides(spec, fields.get("params", {}), max_side=MAX_JOB_OUTPUT_SIDE)
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
        input_at=input_at,
        output_at=output_at,
        keep_partial=keep_partial,
    )


def normalise_roots(roots: Sequence[str]) -> tuple[str, ...]:
    """Allowed roots as absolute, symlink-resolved paths."""
    out = []
    for root in roots:
        if not os.path.isabs(root):
            raise ValueError(f"allowed root must be an absolute path: {root!r}")
        out.append(os.path.realpath(root))
    return tuple(out)
