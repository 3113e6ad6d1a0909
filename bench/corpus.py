"""Every file of one or more corpus directories through `gpu-image-worker process`,
one child process per file with a timeout and a memory cap, next to what
Pillow and pyvips decode:

    python bench/corpus.py /work/corpora/* [--timeout 60] [--mem-mb 4096] [-j 2] [--json out.json]
    python bench/corpus.py --fuzz 12 [--seed 1]

With --fuzz N, the files are instead N seeded mutants of each class of each
small seed image (bench/mutants.py), each classified as ``same`` (outputs
written, the thumbnail within 1/255 of the unmutated seed's), ``differs``
(outputs written, the thumbnail not the seed's) or its failure reason; a table
per class of mutation is printed.

Each file is classified as
  ok          outputs written, and the thumbnail's mean colour and alpha (as
              rendered, before WebP encoding) are
              within --tolerance of a plain Pillow thumbnail (tests/pillow_thumbnail.py),
              its size within 1 px (``ok*``: no Pillow reference to compare with)
  wrong       outputs written, but the thumbnail disagrees with the reference
  <reason>    a clean failure, by its reason (unsupported-format, corrupt-image, ...)
  traceback   a Python exception escaped the command
  crash       the child died of a signal
  hang        still running after --timeout (killed)
Files are deduplicated by content; names that are plainly not images (source,
text, JSON) are skipped. Each child is a fork of this process calling the
command's own entry point (fastimg.cli.process.main), so a file costs no
interpreter start-up. pyvips is optional (``pip install pyvips[binary]``)."""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from pillow_thumbnail import colour_stats, reference_thumbnail  # noqa: E402

from fastimg.cli import process as process_command  # noqa: E402
from fastimg.image.decode import decode  # noqa: E402
from fastimg.image.limits import Limits  # noqa: E402
from fastimg.image.render import render  # noqa: E402
from fastimg.image.spec import SPEC_V1  # noqa: E402

NOT_IMAGES = {
    ".md",
    ".txt",
    ".rs",
    ".py",
    ".sh",
    ".json",
    ".c",
    ".h",
    ".toml",
    ".yml",
    ".yaml",
    ".html",
    ".js",
    ".ts",
    ".cmake",
    ".in",
    ".csv",
    ".lut",
    ".gpl",
    ".ggr",
    ".icc",
    ".icm",
    ".ttf",
    ".otf",
    ".pcf",
    ".pil",
    ".bdf",
    ".fnt",
    ".gz",
    ".zip",
    ".tar",
    ".bin",
    ".sha256",
    ".md5",
    ".patch",
}
CLASSES = ("ok", "ok*", "wrong", "traceback", "crash", "hang")


def collect(dirs: list[str]) -> list[Path]:
    seen, files = set(), []
    for d in dirs:
        for p in sorted(Path(d).rglob("*")):
            if not p.is_file() or p.is_symlink() or p.suffix.lower() in NOT_IMAGES:
                continue
            if p.name.upper().startswith(("README", "LICENSE", "COPYING")):
                continue
            digest = hashlib.sha256(p.read_bytes()).digest()
            if digest not in seen:
                seen.add(digest)
                files.append(p)
    return files


def in_child(fn: Callable[[], dict], timeout: float, mem_mb: int) -> dict:
    """fn() in a forked child under an address-space cap; its result, or how it died."""
    fd, out_path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    pid = os.fork()
    if pid == 0:  # child
        status = 70
        try:
            resource.setrlimit(resource.RLIMIT_AS, (mem_mb << 20, mem_mb << 20))
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            result = fn()
            status = 0
        except BaseException:  # noqa: BLE001 - reported to the parent as a traceback
            result = {"traceback": traceback.format_exc()}
        try:
            with open(out_path, "w") as f:
                json.dump(result, f)
        finally:
            os._exit(status)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.unlink(out_path)
            return {"class": "hang"}
        time.sleep(0.005)
    try:
        with open(out_path) as f:
            text = f.read()
    finally:
        os.unlink(out_path)
    if os.WIFSIGNALED(status):
        return {"class": "crash", "signal": os.WTERMSIG(status)}
    try:
        return json.loads(text)
    except ValueError:
        return {"class": "crash", "exit": os.WEXITSTATUS(status)}


def run_process(path: Path, tolerance: float) -> dict:
    """The `process` command on one file, then the thumbnail against the reference."""
    with tempfile.TemporaryDirectory() as out:
        capture = Path(out) / "stdout"
        saved = os.dup(1)
        with open(capture, "w") as f:
            os.dup2(f.fileno(), 1)
            try:
                rc = process_command.main([str(path), "-o", out, "-j", "1"])
            finally:
                sys.stdout.flush()
                os.dup2(saved, 1)
        text = capture.read_text()
        if rc != 0:
            line = next((ln for ln in text.splitlines() if ln.startswith(f"  {path}: ")), "")
            reason, _, message = line[len(f"  {path}: ") :].partition(": ")
            return {"class": reason or "no-failure-line", "message": message[:300]}
    # The thumbnail's pixels as the command made them, before lossy WebP
    # (whose loss on tiny, saturated images is no decoding matter).
    data = path.read_bytes()
    thumb = render(decode(data, [SPEC_V1["thumbnail"]], Limits()), ["thumbnail"], SPEC_V1)["thumbnail"]
    try:
        ref = reference_thumbnail(data)
    except Exception as e:  # noqa: BLE001 - Pillow cannot make a reference of this file
        return {"class": "ok*", "message": f"no reference: {type(e).__name__}: {e}"[:300]}
    size_off = max(abs(a - b) for a, b in zip(thumb.shape[:2], ref.shape[:2], strict=True))
    colour_off = float(np.abs(colour_stats(thumb) - colour_stats(ref)).max())
    wrong = size_off > 1 or colour_off > tolerance
    return {
        "class": "wrong" if wrong else "ok",
        "size_off": int(size_off),
        "colour_off": round(colour_off, 2),
        "size": [int(thumb.shape[1]), int(thumb.shape[0])],
        "ref_size": [int(ref.shape[1]), int(ref.shape[0])],
    }


def fuzz_process(path: Path, original: Path) -> dict:
    """A mutant through `process`: its failure reason, or whether its thumbnail is the original's."""
    result = run_process(path, tolerance=0.0)
    if result["class"] not in ("ok", "ok*", "wrong"):
        return result

    def thumb(p: Path) -> np.ndarray:
        return render(decode(p.read_bytes(), [SPEC_V1["thumbnail"]], Limits()), ["thumbnail"], SPEC_V1)["thumbnail"]

    a, b = thumb(path), thumb(original)
    same = a.shape == b.shape and float(np.abs(a.astype(np.float64) - b).mean()) <= 1.0
    return {"class": "same" if same else "differs"}


def fuzz(per_class: int, seed: int, timeout: float, mem_mb: int) -> int:
    """Seeded mutants through `process`; a table of outcomes per class of mutation."""
    import mutants

    with tempfile.TemporaryDirectory() as d:
        made = mutants.write_mutants(Path(d), per_class, seed)
        rows = []
        for path, cls, original in made:
            row = in_child(lambda path=path, o=original: fuzz_process(path, Path(d) / o), timeout, mem_mb)
            rows.append((cls, str(row.get("class", "traceback" if "traceback" in row else "?"))))
    outcomes = sorted({o for _, o in rows}, key=lambda o: (o not in ("same", "differs"), o))
    print(f"{len(rows)} mutants of {len(mutants.seeds())} seed files, seed {seed}")
    print("| mutation | mutants | " + " | ".join(outcomes) + " |")
    print("|---|---|" + "---|" * len(outcomes))
    for cls in [*mutants.CLASSES, "all"]:
        group = [o for c, o in rows if cls in ("all", c)]
        counts = collections.Counter(group)
        print(f"| {cls} | {len(group)} | " + " | ".join(str(counts[o]) for o in outcomes) + " |")
    bad = sum(o in ("traceback", "crash", "hang", "?") for _, o in rows)
    return 1 if bad else 0


def pillow_decodes(path: Path) -> dict:
    with Image.open(path) as im:
        im.load()
    return {"ok": True}


def vips_decodes(path: Path) -> dict:
    import pyvips

    pyvips.Image.new_from_file(str(path), fail_on="error").avg()
    return {"ok": True}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="*")
    p.add_argument("--fuzz", type=int, metavar="N", help="run N mutants per class and seed file (bench/mutants.py)")
    p.add_argument("--seed", type=int, default=1, help="the mutants' random seed (default 1)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per file and decoder (default 60)")
    p.add_argument("--mem-mb", type=int, default=4096, help="address-space cap per child (default 4096)")
    p.add_argument("--tolerance", type=float, default=2.0, help="mean colour/alpha difference allowed, in 0..255")
    p.add_argument("--no-compare", action="store_true", help="skip the Pillow and pyvips columns")
    p.add_argument("--json", metavar="FILE", help="write every file's result here")
    p.add_argument("--list", action="store_true", help="print each file that is not ok, with its message")
    args = p.parse_args(argv)
    if args.fuzz:
        return fuzz(args.fuzz, args.seed, args.timeout, args.mem_mb)
    if not args.dirs:
        p.error("give corpus directories, or --fuzz N")

    try:
        import pyvips  # noqa: F401

        have_vips = not args.no_compare
    except ImportError:
        have_vips = False
    files = collect(args.dirs)
    rows: list[dict[str, object]] = []
    started = time.perf_counter()
    for i, path in enumerate(files):
        row: dict[str, object] = {"file": str(path)}
        row.update(in_child(lambda path=path: run_process(path, args.tolerance), args.timeout, args.mem_mb))
        if "traceback" in row:
            row["class"] = "traceback"
        if not args.no_compare:
            row["pillow"] = "ok" in in_child(lambda path=path: pillow_decodes(path), args.timeout, args.mem_mb)
            if have_vips:
                row["vips"] = "ok" in in_child(lambda path=path: vips_decodes(path), args.timeout, args.mem_mb)
        rows.append(row)
        if sys.stderr.isatty():
            sys.stderr.write(f"\r{i + 1}/{len(files)}")
    elapsed = time.perf_counter() - started
    if sys.stderr.isatty():
        sys.stderr.write("\n")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    counts = collections.Counter(str(r["class"]) for r in rows)
    order = [c for c in CLASSES if c in counts] + sorted(c for c in counts if c not in CLASSES)
    print(f"{len(rows)} distinct files from {', '.join(args.dirs)} in {elapsed:.0f}s")
    header = (
        "| class | files |"
        + (" Pillow decodes |" if not args.no_compare else "")
        + (" pyvips decodes |" if have_vips else "")
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))

    def table_row(label: str, group: list) -> str:
        line = f"| {label} | {len(group)} |"
        if not args.no_compare:
            line += f" {sum(bool(r.get('pillow')) for r in group)} |"
        if have_vips:
            line += f" {sum(bool(r.get('vips')) for r in group)} |"
        return line

    for c in order:
        print(table_row(c, [r for r in rows if r["class"] == c]))
    print(table_row("all", rows))
    if args.list:
        for r in rows:
            if r["class"] not in ("ok", "ok*") or r.get("message"):
                detail = r.get("message") or r.get("traceback", "").strip().splitlines()[-1:] or r.get("colour_off", "")
                print(f"{r['class']}\t{r['file']}\t{detail}")
    bad = counts["traceback"] + counts["crash"] + counts["hang"] + counts["wrong"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
