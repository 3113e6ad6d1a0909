"""Which input formats this installation can decode, and the operator's
choice among them (``--input-formats``).

A format is named as Pillow names it, in lower case. The lists of formats,
each named for what it holds: ``sniff.IMAGE_TYPES``, the seed's upload types
(SVG included); ``limits.DEFAULT_INPUT_FORMATS``, accepted unless
``--input-formats`` says otherwise; ``DECODABLE_FORMATS`` (here), what
``--input-formats`` may list in this installation; and
``sniff.IDENTIFIABLE_FORMATS``, what ``sniff.identify`` can name from a
signature."""

from __future__ import annotations

import importlib.util

from PIL import EpsImagePlugin, Image, ImageFile

Image.init()
# Accepted-format names are Pillow's format names in lower case. ("jpeg" also
# covers camera JPEGs with an MPF index, which Pillow's JPEG decoder opens as MPO.)
_NEVER = {
    "dib": "headerless BMP has no signature to tell it from other data",
    "iptc": "not an image format",
    "mpeg": "not an image format",
}


def _cannot_decode_here(name: str) -> str | None:
    """Why this installation cannot decode format ``name``, or None when it can."""
    if name in _NEVER:
        return _NEVER[name]
    if name == "svg":  # rendered by resvg (image/svg.py), not by Pillow
        return None if importlib.util.find_spec("resvg_py") else "resvg-py is not installed"
    if name.upper() not in Image.OPEN:
        return "not a format Pillow reads"
    factory = Image.OPEN[name.upper()][0]
    if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
        return "Pillow only identifies it; no decoder is installed"
    if name == "eps" and not EpsImagePlugin.has_ghostscript():
        return "Ghostscript is not installed"
    return None


# What --input-formats may list in this installation.
DECODABLE_FORMATS: tuple[str, ...] = tuple(
    sorted(n for n in {f.lower() for f in Image.OPEN} | {"svg"} if not _cannot_decode_here(n))
)


def parse_input_formats(text: str) -> tuple[str, ...]:
    """The accepted formats from a comma-separated list of names (jpeg, png,
    tiff, avif, ...); ValueError naming what is wrong."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    if not names:
        raise ValueError("no formats given")
    for name in names:
        why = _cannot_decode_here(name)
        if why:
            raise ValueError(f"format {name!r} cannot be accepted: {why} (possible: {', '.join(DECODABLE_FORMATS)})")
    return names
