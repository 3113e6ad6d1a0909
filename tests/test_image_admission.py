"""The memory estimate that admission works from stays above what a job
really uses at its peak, measured in a fresh process for each kind of input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastimg.cli.options import parse_size
from fastimg.image.admission import Budget, estimate
from fastimg.image.decode import header
from fastimg.image.errors import PermanentError
from fastimg.image.spec import SPEC_V1

MEASURE = r"""
import json, resource, sys, tempfile
from fastimg.queue.jobs import parse_job
from fastimg.image.pipeline import encoder_pool, process
from fastimg.image.write import Writer
from PIL import Image

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

out = tempfile.mkdtemp()
def job(path, name):
    return parse_job(json.dumps({"jobId": name, "inputPath": path, "outputDir": out,
                                 "operations": ["thumbnail", "blur", "low-quality"]}))
warm = out + "/warm.png"
Image.new("RGB", (64, 48)).save(warm)
pool = encoder_pool()
process(job(warm, "warm"), encoders=pool, writer=Writer(durable=False))
before = rss()
process(job(sys.argv[1], "big"), encoders=pool, writer=Writer(durable=False))
# VmHWM, not ru_maxrss: the latter keeps the parent's peak across exec.
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
print(json.dumps({"before": before, "peak": peak}))
"""


def noise(h: int, w: int, c: int, dtype=np.uint8) -> np.ndarray:
    hi = 255 if dtype == np.uint8 else 65535
    return np.random.default_rng(1).integers(0, hi + 1, (h, w, c) if c > 1 else (h, w), dtype=dtype)


def make(kind: str, path: Path) -> Path:
    if kind == "png-rgb-12mp":
        Image.fromarray(noise(3000, 4000, 3)).save(path, compress_level=0)
    elif kind == "png-rgba-9mp":
        Image.fromarray(noise(3000, 3000, 4)).save(path, compress_level=0)
    elif kind == "jpeg-24mp":
        Image.fromarray(noise(500, 750, 3)).resize((6000, 4000)).save(path, quality=90)
    elif kind == "png-grey16-6mp":
        Image.fromarray(noise(2000, 3000, 1, np.uint16)).save(path, compress_level=0)
    elif kind == "tiff-rgb16-3mp":
        raw = noise(1500, 2000, 3, np.uint16).astype(">u2").tobytes()
        Image.frombytes("RGB", (2000, 1500), raw, "raw", "RGB;16B").save(path)  # a 16-bit header
    return path


@pytest.mark.parametrize("kind", ["png-rgb-12mp", "png-rgba-9mp", "jpeg-24mp", "png-grey16-6mp"])
def test_estimate_stays_above_the_measured_peak(tmp_path, kind):
    path = make(kind, tmp_path / f"{kind}.{'jpg' if 'jpeg' in kind else 'png'}")
    data = path.read_bytes()
    need = estimate(header(data), list(SPEC_V1.values()), len(data))
    res = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)
    used = m["peak"] - m["before"]
    assert used < need, f"{kind}: used {used >> 20} MB, estimated {need >> 20} MB"
    assert need < 4 * used + (64 << 20), f"{kind}: estimate {need >> 20} MB is far above the {used >> 20} MB used"


def test_budget_refuses_what_never_fits_and_counts_what_it_admits():
    budget = Budget(100)
    with pytest.raises(PermanentError) as e:
        with budget.admit(101, "job x"):
            pass
    assert e.value.reason == "too-large" and "budget" in str(e.value)
    with budget.admit(60, "a"):
        assert budget.used == 60
    assert budget.used == 0 and budget.peak == 60


def test_sizes_parse_with_units():
    assert parse_size("4G") == 4 << 30 and parse_size("512M") == 512 << 20 and parse_size("1024") == 1024
    assert parse_size("1.5GiB") == int(1.5 * (1 << 30))
    for bad in ("", "-1G", "lots"):
        with pytest.raises(ValueError):
            parse_size(bad)
