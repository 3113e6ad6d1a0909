"""The retry decision and the records it makes, without Redis."""

from __future__ import annotations

import errno
import json

import pytest

from fastimg.image import pipeline
from fastimg.image.errors import PermanentError, ResourceExhausted, TransientError, io_error
from fastimg.queue import outcomes
from fastimg.queue.jobs import parse_job

POLICY = outcomes.Policy(max_retries=2, backoff_base=0.01, backoff_cap=0.02)


def job(**extra):
    fields = {"jobId": "j", "inputPath": "/in/j.jpg", "outputDir": "/out", "operations": ["thumbnail"]}
    return parse_job(json.dumps(fields | extra))


def test_transient_errors_retry_until_the_limit_then_fail():
    first = outcomes.after_error(job(), TransientError("io-error", "hiccup"), "w", POLICY)
    assert first.list == "retry" and first.record["retryCount"] == 1 and first.due_ms
    last = outcomes.after_error(job(retryCount=2), TransientError("io-error", "hiccup"), "w", POLICY)
    assert last.list == "failed" and last.record["attempts"] == 3 and last.record["reason"] == "io-error"
    never = outcomes.after_error(job(), PermanentError("too-large", "big"), "w", POLICY)
    assert never.list == "failed" and never.record["attempts"] == 1


@pytest.mark.parametrize(
    "code, reason",
    [
        (errno.ENOSPC, "no-space"),
        (errno.EDQUOT, "no-space"),
        (errno.EMFILE, "too-many-files"),
        (errno.ENFILE, "too-many-files"),
        (errno.ENOMEM, "out-of-memory"),
        (errno.EIO, "io-error"),
    ],
)
def test_exhausted_resources_never_use_up_attempts(code, reason):
    error = io_error("cannot write output", OSError(code, "x"))
    assert error.reason == reason and error.retry
    outcome = outcomes.after_error(job(retryCount=2, resourceRetries=7), error, "w", POLICY)
    if reason == "io-error":
        assert outcome.list == "failed"
    else:  # past max retries, and still retried: the machine is at fault, not the job
        assert outcome.list == "retry" and outcome.record["retryCount"] == 2
        assert outcome.record["resourceRetries"] == 8 and outcome.record["lastReason"] == reason


def test_memory_error_anywhere_in_a_job_is_out_of_memory(monkeypatch, tmp_path):
    (tmp_path / "in.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 100)

    def no_memory(*_a, **_k):
        raise MemoryError

    monkeypatch.setattr(pipeline, "decode_image", no_memory)
    with pytest.raises(ResourceExhausted) as e:
        pipeline.process(
            parse_job(
                json.dumps(
                    {
                        "jobId": "m",
                        "inputPath": str(tmp_path / "in.jpg"),
                        "outputDir": str(tmp_path),
                        "operations": ["blur"],
                    }
                )
            )
        )
    assert e.value.reason == "out-of-memory"


def test_invalid_payload_records_are_capped_with_length_and_hash():
    raw = b'{"jobId": "big", "x": "' + b"a" * 100_000 + b'"}'
    rec = outcomes.invalid(raw, TransientError("invalid-job", "no"), "w").record
    assert len(rec["raw"]) == outcomes.RAW_KEEP and rec["rawBytes"] == len(raw) and len(rec["rawSha256"]) == 64
    small = outcomes.invalid(b'{"jobId": "s", "y": 1}', TransientError("invalid-job", "no"), "w").record
    assert small["jobId"] == "s" and small["y"] == 1 and "raw" not in small
    bad = outcomes.invalid(b"\xff\xfe", TransientError("invalid-job", "no"), "w").record
    assert bad["raw"] == "\\xff\\xfe"
