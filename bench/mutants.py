"""Seeded mutants of small images in each accepted format, for
``bench/corpus.py --fuzz``: the same seed gives the same files.

Seeds are made here from a committed photo (tests/data/rocket.jpg), so the
run needs no corpus. Each class edits what a damaged upload or a crafted file
would:

  bitflip       1 to 8 random bits flipped after the signature
  truncate      the file cut at a random point after the signature
  truncate-end  cut, then the format's end marker put back (JPEG EOI, PNG
                IEND, GIF trailer): the header still promises every pixel
  chunk-length  one chunk or segment length field set to another value
  dimension     a width or height in the header raised or lowered
  trailing      random bytes appended after the complete file
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from PIL import Image

PHOTO = Path(__file__).resolve().parent.parent / "tests" / "data" / "rocket.jpg"
CLASSES = ("bitflip", "truncate", "truncate-end", "chunk-length", "dimension", "trailing")


def seeds() -> dict[str, bytes]:
    """Small files, one per format variant, made from the test photo."""
    with Image.open(PHOTO) as im:
        rgb = im.convert("RGB").resize((120, 80), Image.LANCZOS)
    rgba = rgb.copy()
    rgba.putalpha(rgb.convert("L"))
    out: dict[str, bytes] = {}

    def save(name: str, image: Image.Image, fmt: str, **kw: object) -> None:
        buf = io.BytesIO()
        image.save(buf, fmt, **kw)
        out[name] = buf.getvalue()

    save("baseline.jpg", rgb, "JPEG", quality=85)
    save("progressive.jpg", rgb, "JPEG", quality=85, progressive=True)
    save("grey.jpg", rgb.convert("L"), "JPEG", quality=85)
    save("rgb.png", rgb, "PNG")
    save("rgba-interlaced.png", rgba, "PNG", interlace=1)  # Pillow writes no Adam7; kept for the name's sake
    save("palette.png", rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG")
    save("grey.png", rgb.convert("L"), "PNG")
    save("photo.gif", rgb.convert("P", palette=Image.Palette.ADAPTIVE), "GIF")
    save("lossy.webp", rgb, "WEBP", quality=80)
    save("lossless.webp", rgba, "WEBP", lossless=True)
    save("rgb.bmp", rgb, "BMP")
    save("raw.tif", rgb, "TIFF")
    save("lzw.tif", rgb, "TIFF", compression="tiff_lzw")
    save("deflate.tif", rgba, "TIFF", compression="tiff_adobe_deflate")
    return out


def _body_start(data: bytes) -> int:
    return 12 if data[:4] == b"RIFF" else 8


def bitflip(data: bytes, r: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(r.randint(1, 8)):
        b[r.randrange(_body_start(data), len(b))] ^= 1 << r.randrange(8)
    return bytes(b)


def truncate(data: bytes, r: random.Random) -> bytes:
    return data[: r.randrange(_body_start(data), len(data))]


def truncate_end(data: bytes, r: random.Random) -> bytes:
    cut = truncate(data, r)
    if data.startswith(b"\xff\xd8"):
        return cut + b"\xff\xd9"
    if data.startswith(b"\x89PNG"):
        return cut + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    if data.startswith(b"GIF"):
        return cut + b"\x3b"
    return cut


def _png_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """(offset, type, length) of each chunk."""
    chunks, pos = [], 8
    while pos + 8 <= len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        chunks.append((pos, data[pos + 4 : pos + 8], length))
        pos += 12 + length
    return chunks


def _jpeg_segments(data: bytes) -> list[int]:
    """Offsets of the length field of each marker segment before the first scan's data."""
    out, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        out.append(pos + 2)
        if marker == 0xDA:
            break
        pos += 2 + length
    return out


def _tiff_entries(data: bytes) -> dict[int, int]:
    """Tag -> offset of its value field, in the first IFD of a little-endian TIFF."""
    ifd = struct.unpack("<I", data[4:8])[0]
    n = struct.unpack("<H", data[ifd : ifd + 2])[0]
    out = {}
    for i in range(n):
        at = ifd + 2 + 12 * i
        out[struct.unpack("<H", data[at : at + 2])[0]] = at + 8
    return out


def _other_value(old: int, r: random.Random, top: int) -> int:
    choices = [0, 1, old // 2, old + 1, old * 2, old * 10, top, r.randrange(top + 1)]
    value = r.choice([c for c in choices if c != old and 0 <= c <= top] or [top])
    return int(value)


def chunk_length(data: bytes, r: random.Random) -> bytes:
    b = bytearray(data)
    if data.startswith(b"\x89PNG"):
        at = r.choice(_png_chunks(data))[0]
        b[at : at + 4] = struct.pack(">I", _other_value(struct.unpack(">I", data[at : at + 4])[0], r, 1 << 31))
    elif data.startswith(b"\xff\xd8"):
        at = r.choice(_jpeg_segments(data))
        b[at : at + 2] = struct.pack(">H", _other_value(struct.unpack(">H", data[at : at + 2])[0], r, 0xFFFF))
    elif data.startswith(b"RIFF"):
        at = r.choice([4, 16])  # the RIFF size, the first chunk's size
        b[at : at + 4] = struct.pack("<I", _other_value(struct.unpack("<I", data[at : at + 4])[0], r, 1 << 31))
    elif data.startswith(b"GIF"):
        # A data sub-block's length byte, somewhere in the image data.
        at = r.randrange(len(data) // 2, len(data) - 1)
        b[at] = r.randrange(256)
    elif data.startswith(b"BM"):
        at = r.choice([2, 34])  # bfSize, biSizeImage
        b[at : at + 4] = struct.pack("<I", _other_value(struct.unpack("<I", data[at : at + 4])[0], r, 1 << 31))
    else:
        at = _tiff_entries(data)[279]  # StripByteCounts (the first strip's, or the offset of the list)
        b[at : at + 4] = struct.pack("<I", _other_value(struct.unpack("<I", data[at : at + 4])[0], r, 1 << 24))
    return bytes(b)


def dimension(data: bytes, r: random.Random) -> bytes:
    b = bytearray(data)
    if data.startswith(b"\x89PNG"):
        at = r.choice([16, 20])
        b[at : at + 4] = struct.pack(">I", _other_value(struct.unpack(">I", data[at : at + 4])[0], r, 4096))
        b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))  # IHDR stays valid: only the size lies
    elif data.startswith(b"\xff\xd8"):
        sof = next(i for i in range(2, len(data) - 9) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2))
        at = sof + r.choice([5, 7])
        b[at : at + 2] = struct.pack(">H", _other_value(struct.unpack(">H", data[at : at + 2])[0], r, 4096))
    elif data.startswith(b"RIFF"):
        chunk = data[12:16]
        if chunk == b"VP8L":  # 14-bit width-1 and height-1, packed after the signature byte
            bits = struct.unpack("<I", data[21:25])[0]
            shift = r.choice([0, 14])
            old = (bits >> shift) & 0x3FFF
            bits = (bits & ~(0x3FFF << shift)) | (_other_value(old, r, 4095) << shift)
            b[21:25] = struct.pack("<I", bits)
        else:  # VP8: 14-bit width and height after the start code
            at = r.choice([26, 28])
            old = struct.unpack("<H", data[at : at + 2])[0] & 0x3FFF
            b[at : at + 2] = struct.pack("<H", _other_value(old, r, 4095))
    elif data.startswith(b"GIF"):
        desc = data.index(b"\x2c", 13 + 3 * (2 ** ((data[10] & 7) + 1)) if data[10] & 0x80 else 13)
        at = r.choice([6, 8, desc + 5, desc + 7])  # logical screen or the frame's size
        b[at : at + 2] = struct.pack("<H", _other_value(struct.unpack("<H", data[at : at + 2])[0], r, 4096))
    elif data.startswith(b"BM"):
        at = r.choice([18, 22])
        b[at : at + 4] = struct.pack("<i", _other_value(struct.unpack("<i", data[at : at + 4])[0], r, 4096))
    else:
        at = _tiff_entries(data)[r.choice([256, 257])]
        b[at : at + 2] = struct.pack("<H", _other_value(struct.unpack("<H", data[at : at + 2])[0], r, 4096))
    return bytes(b)


def trailing(data: bytes, r: random.Random) -> bytes:
    return data + bytes(r.randrange(256) for _ in range(r.randint(1, 64)))


MUTATORS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "bitflip": bitflip,
    "truncate": truncate,
    "truncate-end": truncate_end,
    "chunk-length": chunk_length,
    "dimension": dimension,
    "trailing": trailing,
}


def write_mutants(directory: Path, per_class: int, seed: int) -> list[tuple[Path, str, str]]:
    """Write the seeds and ``per_class`` mutants of each seed in each class to
    ``directory``; (path, class, seed name) of each mutant, duplicates dropped."""
    r = random.Random(seed)
    out, seen = [], set()
    for name, data in seeds().items():
        (directory / name).write_bytes(data)
        seen.add(data)
        for cls, mutate in MUTATORS.items():
            for i in range(per_class):
                mutant = mutate(data, r)
                if mutant in seen:
                    continue
                seen.add(mutant)
                stem, ext = name.rsplit(".", 1)
                path = directory / f"{stem}.{cls}.{i}.{ext}"
                path.write_bytes(mutant)
                out.append((path, cls, name))
    return out
