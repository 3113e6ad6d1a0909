"""Reading a job's input file."""

from __future__ import annotations

import os
import stat

from .errors import PermanentError, TransientError
from .limits import Limits


def read_input(path: str, limits: Limits) -> bytes:
    try:
        # O_NONBLOCK: opening a FIFO must not hang the worker; fstat refuses it next.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise TransientError("input-missing", f"input file not found: {path}") from None
    except OSError as e:
        raise TransientError("io-error", f"cannot open input: {e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PermanentError("not-a-file", f"input is not a regular file: {path}")
        if st.st_size > limits.max_input_bytes:
            raise PermanentError("too-large", f"input is {st.st_size} bytes, limit {limits.max_input_bytes}")
        with os.fdopen(fd, "rb") as f:
            fd = -1
            return f.read()
    except OSError as e:
        raise TransientError("io-error", f"cannot read input: {e}") from None
    finally:
        if fd >= 0:
            os.close(fd)
