"""The Python examples of docs/kernels.md and the README run as they stand.
A block whose first line is ``# needs: torch`` (or ``torch-cuda``) is skipped,
with the reason, where that is missing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import fastimg

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks() -> list:
    out = []
    for name in ("docs/kernels.md",):
        for i, code in enumerate(BLOCK.findall((ROOT / name).read_text())):
            out.append(pytest.param(code, id=f"{name}-{i}"))
    return out


def missing(need: str) -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if need == "torch-cuda" and not (torch.cuda.is_available() and fastimg.backends().default == "cuda"):
        return "no CUDA device for torch and fastimg"
    return None


@pytest.mark.parametrize("code", blocks())
def test_example_runs(code):
    need = re.match(r"# needs: ([\w-]+)\n", code)
    reason = missing(need.group(1)) if need else None
    if reason:
        pytest.skip(reason)
    exec(compile(code, "<docs example>", "exec"), {})


def test_the_readme_keeps_the_aspect_ratio():
    readme = (ROOT / "README.md").read_text()
    assert "resize(img, (320, None)" in readme and "(320, 240)" not in readme
