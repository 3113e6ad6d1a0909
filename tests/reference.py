"""Float64 reference implementations of the kernels, written from their
documented definitions (docs/kernels.md) with numpy and SciPy only."""

from __future__ import annotations

import math

import numpy as np

SUPPORT = {"box": 0.5, "bilinear": 1.0, "bicubic": 2.0, "lanczos3": 3.0}


def _kernel(name: str, x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    if name == "box":
        return ((x > -0.5) & (x <= 0.5)).astype(np.float64)
    if name == "bilinear":
        return np.clip(1.0 - ax, 0.0, None)
    if name == "bicubic":
        a = -0.5
        near = ((a + 2) * ax - (a + 3)) * ax * ax + 1
        far = (((ax - 5) * ax + 8) * ax - 4) * a
        return np.where(ax < 1, near, np.where(ax < 2, far, 0.0))
    if name == "lanczos3":
        return np.where(ax < 3, np.sinc(x) * np.sinc(x / 3), 0.0)
    raise ValueError(name)


def resize_matrix(n_in: int, n_out: int, name: str) -> np.ndarray:
    """(n_out, n_in) matrix of Pillow-geometry resampling weights."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    support = SUPPORT[name] * stretch
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        j = np.arange(lo, hi)
        w = _kernel(name, (j - centre + 0.5) / stretch)
        m[i, lo:hi] = w / w.sum()
    return m


def gaussian_weights(sigma: float) -> np.ndarray:
    r = max(1, math.ceil(3 * sigma))
    k = np.arange(-r, r + 1)
    w = np.exp(-0.5 * (k / sigma) ** 2)
    return w / w.sum()


def full(dtype: np.dtype) -> float:
    """A channel's full intensity (alpha's 1) in images of dtype."""
    return 1.0 if np.dtype(dtype).kind == "f" else float(np.iinfo(dtype).max)


def _premultiply(img: np.ndarray) -> np.ndarray:
    f = img.astype(np.float64)
    if f.ndim == 3 and f.shape[2] == 4:
        f[..., :3] *= f[..., 3:] / full(img.dtype)
    return f


def _to_int(f: np.ndarray, dtype: np.dtype = np.uint8) -> np.ndarray:
    return np.floor(np.clip(f, 0, full(dtype)) + 0.5).astype(dtype)


def _unpremultiply(f: np.ndarray, dtype: np.dtype = np.uint8) -> np.ndarray:
    """Integers rounded and clamped; floats neither, but alpha clamped to 0..1."""
    if np.dtype(dtype).kind == "f":
        if not (f.ndim == 3 and f.shape[2] == 4):
            return f.astype(dtype)
        alpha = np.clip(f[..., 3], 0.0, 1.0)
        colour = np.where(alpha[..., None] > 0, f[..., :3] / np.where(alpha > 0, alpha, 1.0)[..., None], 0.0)
        return np.dstack([colour, alpha]).astype(dtype)
    if not (f.ndim == 3 and f.shape[2] == 4):
        return _to_int(f, dtype)
    out = np.empty(f.shape, dtype)
    alpha = _to_int(f[..., 3], dtype)
    safe = np.where(alpha > 0, np.minimum(f[..., 3], full(dtype)), 1.0)
    colour = _to_int(f[..., :3] * full(dtype) / safe[..., None], dtype)
    colour[alpha == 0] = 0
    out[..., :3] = colour
    out[..., 3] = alpha
    return out


def resize(img: np.ndarray, size: tuple[int, int], name: str = "lanczos3") -> np.ndarray:
    width, height = size
    f = _premultiply(img)
    mh = resize_matrix(img.shape[1], width, name)
    mv = resize_matrix(img.shape[0], height, name)
    f = np.tensordot(mv, f, axes=(1, 0))  # rows
    f = np.moveaxis(np.tensordot(mh, f, axes=(1, 1)), 0, 1)  # columns
    return _unpremultiply(f, img.dtype)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage  # here, so the GPU check needs no SciPy

    w = gaussian_weights(sigma)
    f = _premultiply(img)
    f = ndimage.correlate1d(f, w, axis=0, mode="reflect")
    f = ndimage.correlate1d(f, w, axis=1, mode="reflect")
    return _unpremultiply(f, img.dtype)


def bayer8() -> np.ndarray:
    """The 8x8 Bayer matrix (values 0..63) by its recursive definition."""
    m = np.zeros((1, 1), np.int64)
    while m.shape[0] < 8:
        m = np.block([[4 * m, 4 * m + 2], [4 * m + 3, 4 * m + 1]])
    return m


def quantize(img: np.ndarray, levels: int, dither: bool = False) -> np.ndarray:
    n = levels - 1
    m = full(img.dtype)
    f = img.astype(np.float64)
    if m == 1.0:
        f = np.nan_to_num(np.clip(f, 0.0, 1.0), nan=0.0)
    h, w = img.shape[:2]
    if dither:
        t = (bayer8()[np.arange(h)[:, None] % 8, np.arange(w)[None, :] % 8] + 0.5) / 64.0
        if img.ndim == 3:
            t = t[..., None]
    else:
        t = 0.5
    index = np.minimum(np.floor(f * n / m + t), n)
    out = (index / n).astype(img.dtype) if m == 1.0 else np.floor(index * m / n + 0.5).astype(img.dtype)
    if img.ndim == 3 and img.shape[2] == 4:
        out[..., 3] = img[..., 3]
    return out
