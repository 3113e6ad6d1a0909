"""Accuracy of each resize implementation against the float64 reference, on
the 12 MP benchmark photo: ``python bench/accuracy.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]
import reference  # noqa: E402

import fastimg  # noqa: E402
from conftest import make_12mp  # noqa: E402


def main() -> None:
    img = make_12mp()
    impls = {
        "fastimg lanczos3": lambda s: fastimg.resize(img, s),
        "Pillow LANCZOS": lambda s: np.asarray(Image.fromarray(img).resize(s, Image.LANCZOS)),
    }
    try:
        import cv2

        impls["cv2 INTER_AREA"] = lambda s: cv2.resize(img, s, interpolation=cv2.INTER_AREA)
        impls["cv2 INTER_LANCZOS4"] = lambda s: cv2.resize(img, s, interpolation=cv2.INTER_LANCZOS4)
    except ImportError:
        print("OpenCV not installed: skipped")
    print(f"{'size':>10}  {'implementation':<20} {'max err':>8} {'mean err':>9}")
    for size in ((320, 240), (1280, 960)):
        want = reference.resize(img, size, "lanczos3").astype(np.int16)
        for name, f in impls.items():
            err = np.abs(f(size).astype(np.int16) - want)
            print(f"{size[0]:>5}x{size[1]:<4}  {name:<20} {err.max():>8} {err.mean():>9.3f}")


if __name__ == "__main__":
    main()
