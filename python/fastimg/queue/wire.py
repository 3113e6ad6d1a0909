"""The wire format shared by the queue, the status hashes and producers:
strict JSON and a millisecond clock."""

from __future__ import annotations

import json
import time
from typing import Any


def now_ms() -> int:
    """Milliseconds since the epoch, as the seed's ``timestamp``."""
    return int(time.time() * 1000)


def dumps(record: Any) -> str:
    """Compact, strict JSON (no NaN or Infinity, which Node's JSON.parse refuses).

    UTF-8 is kept as it is, except when the record holds a lone surrogate (valid
    in JSON text, not encodable as UTF-8): then every non-ASCII character is
    escaped, so that Redis can always store what we write."""
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(record, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text


def text(value: bytes | str) -> str:
    """A Redis reply as text (the worker's connections return bytes)."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


class StrictJSONError(ValueError):
    """Not strict JSON: NaN, Infinity, a number that overflows, or nested too deeply."""


def _no_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise StrictJSONError(f"number {text[:40]} is out of range")
    return value


def loads(text: str | bytes) -> Any:
    """Parse strict JSON: NaN, Infinity and overflowing numbers are refused,
    and so is nesting deeper than the parser's recursion allows."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise StrictJSONError("nested too deeply") from None
