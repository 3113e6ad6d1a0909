"""The wire format shared by the queue, the status hashes and producers:
compact JSON and a millisecond clock."""

from __future__ import annotations

import json
import time
from typing import Any


def now_ms() -> int:
    """Milliseconds since the epoch, as the seed's ``timestamp``."""
    return int(time.time() * 1000)


def dumps(record: Any) -> str:
    """Compact JSON, UTF-8 kept as is (the seed's Node.js server reads it)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)
