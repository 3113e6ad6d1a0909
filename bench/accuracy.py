"""Accuracy against the float64 references: ``python bench/accuracy.py``.

Each resize implementation on the 12 MP benchmark photo; then fastimg's
Gaussian blur, which from sigma 6 on is computed on a coarser grid
(docs/kernels.md), on photos, white noise and a hard-edged checkerboard."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]
import reference  # noqa: E402
from conftest import DATA, make_12mp  # noqa: E402

import fastimg  # noqa: E402


def main() -> None:
    img = make_12mp()
    impls = {
        "fastimg lanczos3": lambda s: fastimg.resize(img, s),
        "Pillow LANCZOS": lambda s: np.asarray(Image.fromarray(img).resize(s, Image.LANCZOS)),
    }
    try:
        import pyvips

        def vips(size: tuple[int, int]) -> np.ndarray:
            scale = (size[0] / img.shape[1], size[1] / img.shape[0])
            return pyvips.Image.new_from_array(img).resize(scale[0], vscale=scale[1], kernel="lanczos3").numpy()

        impls["pyvips lanczos3"] = vips
    except (ImportError, OSError):
        print("pyvips not installed: skipped")
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
    blur_accuracy()


def blur_accuracy() -> None:
    inputs = {}
    for name in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"):
        with Image.open(DATA / name) as im:
            im = im.convert("RGB")
            im.thumbnail((640, 640))
            inputs[name] = np.asarray(im)
    inputs["white noise"] = np.random.default_rng(1).integers(0, 256, (481, 643, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:480, :640]
    inputs["checkerboard"] = np.repeat((((yy // 37 + xx // 37) % 2) * 255).astype(np.uint8)[..., None], 3, 2)
    print("\nGaussian blur against the exact float64 blur: max difference / pixels differing")
    print(f"{'sigma':>6}  " + "  ".join(f"{n:>15}" for n in inputs))
    for sigma in (2.0, 6.0, 8.0, 12.8, 30.0):
        cells = []
        for img in inputs.values():
            diff = np.abs(fastimg.gaussian_blur(img, sigma).astype(np.int16) - reference.gaussian_blur(img, sigma))
            cells.append(f"{diff.max()} / {100 * (diff > 0).mean():5.2f}%")
        print(f"{sigma:>6}  " + "  ".join(f"{c:>15}" for c in cells))


if __name__ == "__main__":
    main()
