"""The limits a job's input is held to; enforced while reading and decoding."""

from __future__ import annotations

from dataclasses import dataclass

# The seed server's image types (SVG rendered by resvg: image/svg.py).
DEFAULT_INPUT_FORMATS: tuple[str, ...] = ("jpeg", "png", "gif", "webp", "bmp", "tiff", "svg")


@dataclass(frozen=True)
class Limits:
    """Inputs beyond these fail at once with reason ``too-large``; inputs in a
    format not in ``input_formats`` fail with ``unsupported-format`` before any
    decoder parses them."""

    max_input_bytes: int = 200 * 1024 * 1024
    max_pixels: int = 120_000_000  # checked from the header, before decoding
    max_frames: int = 2000  # animations: only the first frame is used, but all are scanned
    input_formats: tuple[str, ...] = DEFAULT_INPUT_FORMATS  # names as formats.DECODABLE_FORMATS spells them
    # Damaged image data (cut short, corrupt) is ``corrupt-image`` unless this
    # (--keep-partial) or the job's keepPartial asks for what could be decoded.
    keep_partial: bool = False
