"""Kernel benchmarks on a 12 MP RGB image, side by side with Pillow and OpenCV.

Run with ``pytest bench/`` (single-threaded comparisons: OpenCV is limited to
one thread). Each group holds one operation; compare the medians within a
group. Accuracy against the float64 reference is in bench/accuracy.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

import fastimg

cv2 = pytest.importorskip("cv2", reason="OpenCV not installed: pip install opencv-python-headless")
cv2.setNumThreads(1)

SIZES = {"320": (320, 240), "1280": (1280, 960)}


@pytest.mark.parametrize("target", SIZES)
@pytest.mark.parametrize("impl", ["fastimg", "pillow", "cv2-area", "cv2-lanczos4"])
def test_resize(benchmark, photo12, impl, target):
    size = SIZES[target]
    benchmark.group = f"resize 12MP -> {target} wide"
    if impl == "fastimg":
        benchmark(fastimg.resize, photo12, size, filter="lanczos3", backend="cpu")
    elif impl == "pillow":
        im = Image.fromarray(photo12)
        benchmark(im.resize, size, Image.LANCZOS)
    elif impl == "cv2-area":
        benchmark(cv2.resize, photo12, size, interpolation=cv2.INTER_AREA)
    else:
        benchmark(cv2.resize, photo12, size, interpolation=cv2.INTER_LANCZOS4)


@pytest.mark.parametrize("sigma", [2, 8, 30])
@pytest.mark.parametrize("impl", ["fastimg", "pillow", "cv2"])
def test_gaussian_blur(benchmark, photo12, impl, sigma):
    benchmark.group = f"gaussian blur 12MP sigma {sigma}"
    if impl == "fastimg":
        benchmark.pedantic(fastimg.gaussian_blur, (photo12, sigma), {"backend": "cpu"}, rounds=3)
    elif impl == "pillow":
        im = Image.fromarray(photo12)
        benchmark.pedantic(im.filter, (ImageFilter.GaussianBlur(sigma),), rounds=3)
    else:
        # Same truncation as fastimg: radius ceil(3 sigma).
        k = 2 * int(np.ceil(3 * sigma)) + 1
        benchmark.pedantic(cv2.GaussianBlur, (photo12, (k, k), sigma), {"borderType": cv2.BORDER_REFLECT}, rounds=3)


@pytest.mark.parametrize("impl", ["fastimg", "fastimg-dither", "pillow"])
def test_quantize(benchmark, photo12, impl):
    benchmark.group = "quantize 12MP to 32 levels"
    if impl == "pillow":
        im = Image.fromarray(photo12)
        step = 255 / 31
        lut = [round(round(v / step) * step) for v in range(256)] * 3
        benchmark(im.point, lut)
    else:
        benchmark(fastimg.quantize, photo12, 32, dither=impl.endswith("dither"), backend="cpu")
