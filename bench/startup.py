"""What `gpu-image-worker process` costs before and around its work: the CPU
time (user + system) of `process --help` and of `process` on one JPEG, each
over a bare `python -c "import numpy, PIL.Image"`, which any Python image
tool pays. The three commands run interleaved, pinned to one core; medians.

    python bench/startup.py [--runs 15] [--photo tests/data/rocket.jpg]

Also prints the modules each command loads beyond the bare import that
matter for start-up (redis, numpy, Pillow's plugins, the kernels)."""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENTRY = "from fastimg.cli.main import main; import sys; sys.exit(main())"


def cpu_ms(argv: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000


def loaded(args: list[str]) -> list[str]:
    code = (
        "import contextlib, io, json, sys\n"
        "from fastimg.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    try: main({args!r})\n"
        "    except SystemExit: pass\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names = json.loads(out.strip().splitlines()[-1])
    keep = ("redis", "numpy", "PIL", "fastimg._kernels", "fastimg._core", "importlib.metadata")
    return sorted({n for n in names if n.startswith(keep) and (n.count(".") == 0 or "Plugin" in n or "fastimg" in n)})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--photo", default=str(HERE.parent / "tests" / "data" / "rocket.jpg"))
    args = p.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # children inherit the one core
    out = tempfile.mkdtemp()
    commands = {
        "bare import": [sys.executable, "-c", "import numpy, PIL.Image"],
        "process --help": [sys.executable, "-c", ENTRY, "process", "--help"],
        "process one JPEG": [sys.executable, "-c", ENTRY, "process", args.photo, "-o", out, "-j", "1"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    try:
        for _ in range(args.runs):
            for name, argv in commands.items():
                times[name].append(cpu_ms(argv))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    bare = statistics.median(times["bare import"])
    print(f"CPU time, median of {args.runs} runs on one core ({Path(args.photo).name}):")
    for name, samples in times.items():
        median = statistics.median(samples)
        extra = "" if name == "bare import" else f"  ({median - bare:+.0f} ms over the bare import)"
        print(f"  {name:<18} {median:6.0f} ms{extra}")
    print("modules loaded beyond the interpreter that start-up pays for:")
    print("  process --help:  ", ", ".join(loaded(["process", "--help"])) or "none of them")
    with tempfile.TemporaryDirectory() as tmp:
        print("  process one JPEG:", ", ".join(loaded(["process", args.photo, "-o", tmp, "-j", "1"])))


if __name__ == "__main__":
    main()
