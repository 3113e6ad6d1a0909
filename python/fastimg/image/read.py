"""Reading a job's input file."""

from __future__ import annotations

import os
import stat

from .confine import open_beneath
from .errors import PermanentError, TransientError, io_error
from .limits import Limits

# O_NONBLOCK: opening a FIFO must not hang the worker; fstat refuses it next.
_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC


def read_input(path: str, limits: Limits, at: tuple[str, str] | None = None) -> bytes:
    """The bytes of the input at ``path``; with ``at`` = (root, path below it),
    opened so that it cannot resolve outside the root."""
    try:
        fd = open_beneath(at[0], at[1], _FLAGS) if at else os.open(path, _FLAGS)
    except FileNotFoundError:
        raise TransientError("input-missing", f"input file not found: {path}") from None
    except OSError as e:
        raise io_error("cannot open input", e) from None
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
        raise io_error("cannot read input", e) from None
    finally:
        if fd >= 0:
            os.close(fd)
