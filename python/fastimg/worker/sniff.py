"""What kind of image a file is, from its first bytes. Shared by the producer
(which must stay light: no numpy, no native module) and the decoder."""

from __future__ import annotations

from typing import Optional

IMAGE_TYPES = ("jpeg", "png", "gif", "webp", "bmp", "tiff", "svg")  # the seed server's image MIME types


def detect_image_type(head: bytes) -> Optional[str]:
    """The seed's image type of a file from its first bytes (at least 512 for SVG), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    text = head[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<?xml", b"<svg", b"<!doctype svg")) and b"<svg" in text:
        return "svg"
    return None
