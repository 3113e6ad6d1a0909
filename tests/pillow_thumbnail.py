"""A plain Pillow thumbnail to check the worker's against: first frame,
orientation applied, ICC converted to sRGB, 16-bit grey divided by 257,
Lanczos resize. Written from Pillow's documented API only, independently of
the worker's decoder; shared by tests/test_corpus.py and bench/corpus.py."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageCms, ImageOps

_SRGB = ImageCms.createProfile("sRGB")


def fit_inside(width: int, height: int, box: int) -> tuple[int, int]:
    scale = min(1.0, box / width, box / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def reference_thumbnail(data: bytes, box: int = 320) -> np.ndarray:
    """(H, W, 4) uint8 RGBA: the upright sRGB first frame fitted inside box x box."""
    with Image.open(io.BytesIO(data)) as im:
        # Before loading: a PNG's iCCP after its pixels is out of place, and libpng ignores it too.
        icc = im.info.get("icc_profile")
        im.load()
        im = ImageOps.exif_transpose(im)
        if icc and im.mode in ("P", "PA"):  # a palette's colours are in the profile's space too
            im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
        if icc and im.mode in ("RGB", "RGBA", "CMYK"):
            try:
                src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                im = ImageCms.profileToProfile(im, src, _SRGB, outputMode="RGBA" if im.mode == "RGBA" else "RGB")
            except (ImageCms.PyCMSError, OSError, ValueError):
                pass  # viewers ignore a profile they cannot use
        if im.mode.startswith("I;16") or im.mode == "I":
            wide = np.asarray(im, dtype=np.float64)
            grey = np.clip(np.floor(wide / 257 + 0.5), 0, 255).astype(np.uint8)
            key = im.info.get("transparency")  # a PNG colour key matches the 16-bit value
            alpha = np.where(wide == key, 0, 255).astype(np.uint8) if isinstance(key, int) else np.full_like(grey, 255)
            im = Image.fromarray(np.dstack([grey, grey, grey, alpha]), "RGBA")
        depth = data[24] if data.startswith(b"\x89PNG") and len(data) > 24 else 8  # IHDR's bit depth
        if im.mode == "L" and depth < 8 and isinstance(im.info.get("transparency"), int):
            # Pillow scales 1-, 2- and 4-bit grey samples to 8 bits, not their colour key.
            im.info["transparency"] *= 255 // (2**depth - 1)
        im = im.convert("RGBA")
        # Pillow resamples RGBA premultiplied, so transparent pixels' colour does not bleed.
        return np.asarray(im.resize(fit_inside(im.width, im.height, box), Image.Resampling.LANCZOS))


def colour_stats(rgba: np.ndarray) -> np.ndarray:
    """Mean premultiplied R, G, B and mean alpha, in 0..255: the colour a
    viewer sees over black, and how much of the picture is opaque."""
    f = rgba.astype(np.float64)
    if f.ndim == 2:
        f = np.stack([f, f, f, np.full_like(f, 255)], axis=-1)
    elif f.shape[2] == 3:
        f = np.concatenate([f, np.full(f.shape[:2] + (1,), 255.0)], axis=-1)
    alpha = f[..., 3:] / 255
    return np.concatenate([(f[..., :3] * alpha).reshape(-1, 3).mean(0), [f[..., 3].mean()]])
