from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fastimg

DATA = Path(__file__).parent / "data"
PHOTOS = sorted(p.name for p in DATA.iterdir() if p.suffix in (".png", ".jpg"))

CUDA = "cuda" in fastimg.backends().available
requires_cuda = pytest.mark.skipif(
    not CUDA, reason=f"no usable GPU: {fastimg.backends().cuda_reason}"
)


def load_photo(name: str) -> np.ndarray:
    with Image.open(DATA / name) as im:
        return np.asarray(im)


class SeededRng:
    """Fresh random inputs on every run, with the seed kept for the failure message."""

    def __init__(self) -> None:
        self.seed = int(np.random.SeedSequence().entropy % (1 << 63))
        self.gen = np.random.default_rng(self.seed)

    def image(self, h: int, w: int, c: int | None) -> np.ndarray:
        shape = (h, w) if c is None else (h, w, c)
        return self.gen.integers(0, 256, shape, dtype=np.uint8)

    def __repr__(self) -> str:
        return f"seed={self.seed}"


@pytest.fixture
def rng() -> SeededRng:
    return SeededRng()
