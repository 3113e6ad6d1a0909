"""Colour and grey JPEGs decoded by libjpeg-turbo's own API (simplejpeg)
instead of Pillow's binding: the same library, but it reports the warnings
Pillow silences (image data cut short or corrupt), so one decode both makes
the pixels and finds the damage (CMYK and YCCK files stay with Pillow, and
are checked by a second pass: damage.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import simplejpeg
from PIL import Image, ImageFile

from . import pixels
from .damage import jpeg_warning
from .errors import TransientError
from .spec import OutputSpec, fit_inside


def decode_jpeg(
    im: ImageFile.ImageFile, data: bytes, specs: Sequence[OutputSpec], keep_partial: bool
) -> tuple[np.ndarray, str | None] | None:
    """Upright sRGB pixels of an RGB or L JPEG (opened, not loaded), at the
    smallest scale that still covers every output, and the damage kept
    (``keep_partial``); None when libjpeg-turbo refuses the file for another
    reason than damage, which is then left to Pillow to decode or refuse."""
    width, height = im.size
    upright = pixels.orientation(im)  # a JPEG's EXIF and XMP precede its image data
    swap = upright in pixels.TRANSPOSED
    sizes = [fit_inside(width, height, *((s.height, s.width) if swap else (s.width, s.height))) for s in specs]
    space = "GRAY" if im.mode == "L" else "RGB"
    scaled = {"min_width": max(w for w, _ in sizes), "min_height": max(h for _, h in sizes)}
    reason = None
    try:
        decoded = simplejpeg.decode_jpeg(data, colorspace=space, strict=True, **scaled)
    except ValueError as e:
        reason = jpeg_warning(e)
        if reason is None:
            return None
        if not keep_partial:
            raise TransientError("corrupt-image", f"damaged image data: {reason}") from None
        decoded = simplejpeg.decode_jpeg(data, colorspace=space, strict=False, **scaled)
    out = Image.fromarray(decoded[..., 0] if space == "GRAY" else decoded, im.mode)
    out = pixels.to_srgb(out, im.info.get("icc_profile"))
    if upright in pixels.TRANSPOSE:
        out = out.transpose(pixels.TRANSPOSE[upright])
    return np.asarray(out), reason
