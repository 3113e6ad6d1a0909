"""Inputs for the kernel benchmarks: a 12 MP photo made from the test corpus
with a fixed seed, so that runs compare."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def make_12mp(seed: int = 12) -> np.ndarray:
    """4032x3024 RGB: a corpus photo upscaled, with fine grain like a phone sensor's."""
    with Image.open(DATA / "astronaut.png") as im:
        big = np.asarray(im.convert("RGB").resize((4032, 3024), Image.BICUBIC), dtype=np.int16)
    grain = np.random.default_rng(seed).normal(0, 6, big.shape)
    return np.clip(big + grain, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def photo12() -> np.ndarray:
    return make_12mp()
