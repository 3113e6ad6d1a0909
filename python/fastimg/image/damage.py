"""Damage that the decoders recover from without telling: a JPEG whose
entropy data is cut short or corrupt (libjpeg warns, and Pillow silences its
warnings: the missing rows come out grey), a PNG whose image data holds fewer
rows than its header promises or whose IDAT checksum is wrong (Pillow checks
neither: the missing rows come out black), a TIFF whose strips hold fewer
rows than its header promises. Each check gives the reason, in the
decoder's own words where it has some, or None for intact data; bytes after
complete image data are no damage."""

from __future__ import annotations

import struct
import zlib

import simplejpeg
from PIL import ImageFile

# libjpeg's warnings about the image data itself (JWRN_HIT_MARKER,
# JWRN_JPEG_EOF, JWRN_HUFF_BAD_CODE, JWRN_NOT_SEQUENTIAL, ...); its other
# warnings concern metadata (an unknown JFIF revision, a thumbnail's size).
_JPEG_DAMAGE = (
    "corrupt jpeg data",
    "premature end of jpeg file",
    "inconsistent progression sequence",
    "invalid sos parameters",
)


def jpeg_warning(e: ValueError) -> str | None:
    """The damage a strict simplejpeg decode failed for, or None for a failure of another kind."""
    text = str(e)
    return f"libjpeg: {text}" if any(w in text.lower() for w in _JPEG_DAMAGE) else None


def jpeg_damage(data: bytes) -> str | None:
    """libjpeg-turbo's warning while decoding every scan, or None. Decoded at
    the smallest DCT scale in grey: the entropy decoder, which is what warns,
    still reads all of the data, while the rest costs little."""
    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", min_height=1, min_width=1, min_factor=8, strict=True)
    except ValueError as e:
        return jpeg_warning(e)  # a failure of another kind is left to the decoder that makes the pixels
    return None


_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by PNG colour type
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_raw_size(ihdr: bytes) -> int | None:
    """Bytes of filtered scanlines the header promises, or None for a header
    the decoder refuses anyway."""
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr[:13])
    if colour not in _CHANNELS:
        return None
    bits = _CHANNELS[colour] * depth
    passes = _ADAM7 if interlace == 1 else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        cols, rows = -(-max(width - x0, 0) // dx), -(-max(height - y0, 0) // dy)
        if cols and rows:
            total += rows * (1 + -(-cols * bits // 8))
    return total


def png_damage(data: bytes) -> str | None:
    """A wrong IDAT checksum, a broken zlib stream, or image data that ends
    before every row the header promises; None for intact image data."""
    pos, raw_size, inflate, got, seen_idat = 8, None, zlib.decompressobj(), 0, False
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if len(body) < length or pos + 12 + length > len(data):
            break  # a truncated file: the decoder refuses it itself
        if kind == b"IHDR" and length >= 13:
            raw_size = _png_raw_size(body)
        elif kind == b"IDAT":
            seen_idat = True
            (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
            if zlib.crc32(kind + body) != crc:
                return f"IDAT chunk at byte {pos} has a wrong checksum"
            try:
                got += _inflated(inflate, body, (raw_size or 0) - got)
            except zlib.error as e:
                return f"broken data stream in IDAT: {e}"
        elif seen_idat:
            break  # the image data is over: later chunks are not pixels
        pos += 12 + length
    if raw_size is not None and seen_idat and got < raw_size:
        return f"image data ends early: {got} of the {raw_size} bytes of scanlines the header promises"
    return None


def _inflated(inflate: zlib._Decompress, body: bytes, wanted: int) -> int:
    """How many bytes ``body`` inflates to, counted up to ``wanted`` in pieces
    of 1 MiB (never the whole image in memory)."""
    got, pending = 0, body
    while pending and got < wanted and not inflate.eof:
        got += len(inflate.decompress(pending, 1 << 20))
        pending = inflate.unconsumed_tail
    return got


def tiff_damage(im: ImageFile.ImageFile) -> str | None:
    """Strips or tiles that leave part of the image out (an ImageLength raised
    past the rows the strips hold): Pillow decodes what there is and leaves
    the rest black. Checked before loading, from the tiles Pillow will decode."""
    if any(tile.codec_name == "libtiff" for tile in im.tile):
        return None  # one tile for libtiff, which reads the strips itself and says when one is short
    width, height = im.size
    covered = 0
    for tile in im.tile:
        x0, y0, x1, y1 = tile.extents or (0, 0, width, height)
        covered += max(0, min(x1, width) - max(x0, 0)) * max(0, min(y1, height) - max(y0, 0))
    if covered < width * height:
        return f"the strips or tiles hold {covered} of the {width}x{height} pixels the header promises"
    return None


def damage(data: bytes, im: ImageFile.ImageFile) -> str | None:
    """Damage in the image data of ``im`` (opened, not loaded) that its decoder would not report."""
    if im.format in ("JPEG", "MPO"):
        return jpeg_damage(data)
    if im.format == "PNG":
        return png_damage(data)
    if im.format == "TIFF":
        return tiff_damage(im)
    return None
