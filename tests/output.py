"""A child process's output, read on a thread as it comes, so that a test can
wait for a line without blocking forever on a pipe."""

from __future__ import annotations

import subprocess
import threading
import time


class Output:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def count(self, needle: str) -> int:
        with self._changed:
            return sum(needle in line for line in self.lines)

    def wait_for(self, needle: str, times: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(needle in line for line in self.lines) < times:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {needle!r} after {timeout}s:\n{self.text}")
                self._changed.wait(left)

    def close(self, timeout: float = 30.0) -> str:
        """Wait for the process to exit and its output to end; all of it."""
        self.proc.wait(timeout)
        self._reader.join(timeout)
        return self.text

    @property
    def text(self) -> str:
        return "".join(self.lines)
