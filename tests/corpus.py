"""A generated corpus of every input kind the worker must handle, made by code
with fixed seeds (test_image_decode.py), plus the writers Pillow lacks: 16-bit RGB
PNG and TIFF, and an ICC profile with chosen primaries."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageCms

W, H = 240, 160  # landscape, so a wrong rotation shows in the output size


def pattern(w: int = W, h: int = H, seed: int = 0) -> np.ndarray:
    """An asymmetric test card: red top-left quarter, green top-right, blue
    bottom-left, white bottom-right, with a little noise."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (220, 30, 30)
    img[: h // 2, w // 2 :] = (30, 200, 30)
    img[h // 2 :, : w // 2] = (30, 30, 220)
    img[h // 2 :, w // 2 :] = (235, 235, 235)
    noise = np.random.default_rng(seed).integers(-6, 7, img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


QUADRANTS = {"tl": (220, 30, 30), "tr": (30, 200, 30), "bl": (30, 30, 220), "br": (235, 235, 235)}


def quadrant_means(img: np.ndarray) -> dict[str, np.ndarray]:
    h, w = img.shape[:2]
    qh, qw = h // 4, w // 4  # the middle of each quarter, away from the edges
    centres = {"tl": (qh, qw), "tr": (qh, 3 * qw), "bl": (3 * qh, qw), "br": (3 * qh, 3 * qw)}
    return {
        k: img[y - qh // 2 : y + qh // 2, x - qw // 2 : x + qw // 2, :3].reshape(-1, 3).mean(0)
        for k, (y, x) in centres.items()
    }


def save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


# EXIF orientation o: the stored pixels are the upright picture transformed so
# that applying o (what viewers do) gives it back.
STORE_FOR_ORIENTATION = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def oriented_jpeg(orientation: int) -> bytes:
    im = Image.fromarray(pattern())
    op = STORE_FOR_ORIENTATION[orientation]
    if op is not None:
        im = im.transpose(op)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(im, "JPEG", quality=95, exif=exif.tobytes())


def png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG of a uint16 (H, W, C) array, C in 1..4."""
    h, w, c = arr.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def tiff16(arr: np.ndarray) -> bytes:
    """An uncompressed little-endian 16-bit RGB TIFF of a uint16 (H, W, 3) array."""
    h, w, c = arr.shape
    pixels = arr.astype("<u2").tobytes()
    tags = [
        (256, 3, w),
        (257, 3, h),
        (258, 3, None),
        (259, 3, 1),
        (262, 3, 2),
        (273, 4, None),
        (277, 3, c),
        (278, 3, h),
        (279, 4, len(pixels)),
        (284, 3, 1),
    ]
    ifd = 8
    bits = ifd + 2 + 12 * len(tags) + 4
    data = bits + 8
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd) + struct.pack("<H", len(tags)))
    for tag, typ, value in tags:
        count = 3 if tag == 258 else 1
        value = bits if tag == 258 else data if tag == 273 else value
        out += struct.pack("<HHI", tag, typ, count) + (
            struct.pack("<HH", value, 0) if typ == 3 and count == 1 else struct.pack("<I", value)
        )
    out += struct.pack("<I", 0) + struct.pack("<HHHH", 16, 16, 16, 0) + pixels
    return bytes(out)


# sRGB's primaries adapted to D50, as ICC profiles state them.
SRGB_PRIMARIES = {"r": (0.4361, 0.2225, 0.0139), "g": (0.3851, 0.7169, 0.0971), "b": (0.1431, 0.0606, 0.7141)}


def icc_profile(primaries: dict[str, tuple[float, float, float]], gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 RGB display profile: matrix from `primaries`, one gamma curve."""

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(v) -> bytes:
        return b"XYZ " + b"\0" * 4 + b"".join(s15(x) for x in v)

    desc_text = b"fastimg test profile\0"
    tags = [
        (
            b"desc",
            b"desc" + b"\0" * 4 + struct.pack(">I", len(desc_text)) + desc_text + b"\0" * 8 + b"\0" * 3 + b"\0" * 67,
        ),
        (b"wtpt", xyz((0.9642, 1.0, 0.8249))),
        (b"rXYZ", xyz(primaries["r"])),
        (b"gXYZ", xyz(primaries["g"])),
        (b"bXYZ", xyz(primaries["b"])),
        (b"rTRC", b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"),
        (b"cprt", b"text" + b"\0" * 4 + b"none\0\0\0\0"),
    ]
    tags += [(b"gTRC", tags[5][1]), (b"bTRC", tags[5][1])]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + bytes([2, 0x10, 0, 0])
        + b"mntr"
        + b"RGB "
        + b"XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 28
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)
        + b"\0" * 48
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
