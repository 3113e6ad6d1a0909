"""Inputs for the kernel benchmarks: a 12 MP photo made from the test corpus
with a fixed seed, so that runs compare; and the ratio table that
test_bench_kernels.py fills, printed at the end of the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
RESULTS: list[dict] = []


def make_12mp(seed: int = 12) -> np.ndarray:
    """4032x3024 RGB: a corpus photo upscaled, with fine grain like a phone sensor's."""
    with Image.open(DATA / "astronaut.png") as im:
        big = np.asarray(im.convert("RGB").resize((4032, 3024), Image.BICUBIC), dtype=np.int16)
    grain = np.random.default_rng(seed).normal(0, 6, big.shape)
    return np.clip(big + grain, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def photo12() -> np.ndarray:
    return make_12mp()


@pytest.fixture(scope="session")
def kernel_results() -> list[dict]:
    return RESULTS


def pytest_terminal_summary(terminalreporter) -> None:
    if not RESULTS:
        return
    import peers

    import fastimg

    terminalreporter.section(f"fastimg {fastimg.backends().cpu_target} engine against its peers, one core")
    terminalreporter.write_line(peers.table(peers.merge(RESULTS), make_12mp()))
