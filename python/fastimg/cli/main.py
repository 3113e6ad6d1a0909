"""`gpu-image-worker`: the entry point. A first argument naming a command
runs that command; anything else runs the worker. A command's module is
imported only when it runs, so that `process` loads no Redis client and
`--help` loads no pipeline."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

COMMANDS = {
    "serve": ("fastimg.cli.serve", "main"),
    "process": ("fastimg.cli.process", "main"),
    "submit": ("fastimg.cli.admin", "submit_main"),
    "stats": ("fastimg.cli.admin", "stats_main"),
    "requeue-failed": ("fastimg.cli.admin", "requeue_main"),
    "purge-done": ("fastimg.cli.admin", "purge_done_main"),
    "purge-failed": ("fastimg.cli.admin", "purge_failed_main"),
}
WORKER = ("fastimg.cli.worker", "main")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        module, function = COMMANDS[argv[0]]
        argv = argv[1:]
    else:
        module, function = WORKER
    run: Callable[[list[str]], int] = getattr(importlib.import_module(module), function)
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
