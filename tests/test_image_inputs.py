"""Input findings on single formats: colour keys on low-bit grey PNGs, one
orientation rule for every container, and the opt-in formats' limits (an
ICNS's embedded image, FLI's per-frame read limit)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin

from fastimg.image.decode import decode
from fastimg.image.errors import JobError
from fastimg.image.formats import DECODABLE_FORMATS
from fastimg.image.limits import Limits
from fastimg.image.spec import SPEC_V1

CORPUS = Path(__file__).resolve().parent / "data" / "corpus"
SPECS = [SPEC_V1["low-quality"]]  # 1280: these images keep their size


def test_a_4_bit_grey_colour_key_makes_its_pixels_transparent():
    data = (CORPUS / "pngsuite" / "tbbn0g04.png").read_bytes()
    at = data.index(b"tRNS")
    key = struct.unpack(">H", data[at + 4 : at + 6])[0]  # as stored: a 4-bit sample
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "L"
        grey = np.asarray(im)  # Pillow scales 4-bit samples by 17
    got = decode(data, SPECS)
    assert got.shape == (32, 32, 4)
    assert np.array_equal(got[..., 3] == 0, grey == key * 17)
    assert 0.3 < (got[..., 3] == 0).mean() < 0.7  # about half, as PngSuite draws it


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_a_2_bit_grey_colour_key_is_scaled_too():
    samples = np.array([[0, 1, 2, 3] * 4] * 4, np.uint8)  # 16x4, two bits each, key 1
    rows = b"".join(b"\x00" + bytes([0b00011011] * 4) for _ in range(4))
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 4, 2, 0, 0, 0, 0))
        + chunk(b"tRNS", struct.pack(">H", 1))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    got = decode(data, SPECS)
    assert np.array_equal(got[..., 0], samples * 85)
    assert np.array_equal(got[..., 3] == 0, samples == 1)


XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
)
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def stripes() -> Image.Image:
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :20] = (200, 30, 30)  # a red left edge: where it ends up shows the turn
    pixels[:, 20:] = (30, 30, 200)
    return Image.fromarray(pixels)


def saved(fmt: str, icc: bool) -> bytes:
    buf = io.BytesIO()
    kw: dict = {"icc_profile": SRGB} if icc else {}
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", XMP.decode())
        stripes().save(buf, fmt, pnginfo=info, **kw)
    else:
        stripes().save(buf, fmt, xmp=XMP, quality=95, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize("icc", [False, True], ids=["no-profile", "profile"])
def test_xmp_orientation_is_one_rule_for_every_container(fmt, icc):
    got = decode(saved(fmt, icc), SPECS)
    assert got.shape[:2] == (60, 40), "orientation 6 turns 60x40 into 40x60"
    # Turned 90 degrees clockwise: the red left edge is now the top.
    assert got[:15, :, 0].mean() > 150 and got[-15:, :, 2].mean() > 150


def test_exif_orientation_wins_over_xmp():
    exif = Image.Exif()
    exif[0x0112] = 3  # upside down; the XMP says 6
    buf = io.BytesIO()
    stripes().save(buf, "JPEG", exif=exif, xmp=XMP, quality=95)
    got = decode(buf.getvalue(), SPECS)
    assert got.shape[:2] == (40, 60) and got[:, -15:, 0].mean() > 150


def icns_with_j2k(width: int, height: int) -> bytes:
    """An ICNS whose one icon (512x512 by its type) is a JPEG 2000 codestream claiming width x height."""
    siz = struct.pack(">HHIIIIIIIIH", 47, 0, width, height, 0, 0, width, height, 0, 0, 3) + b"\x07\x01\x01" * 3
    j2k = b"\xff\x4f\xff\x51" + siz
    block = b"ic09" + struct.pack(">I", 8 + len(j2k)) + j2k
    return b"icns" + struct.pack(">I", 8 + len(block)) + block


def test_an_icns_embedded_image_is_held_to_the_pixel_limit():
    assert "icns" in DECODABLE_FORMATS
    with pytest.raises(JobError) as e:
        decode(icns_with_j2k(500_000, 500_000), SPECS, Limits(input_formats=("icns",)))
    assert e.value.reason == "too-large" and "500000x500000" in str(e.value), str(e.value)


def test_an_ordinary_icns_decodes_when_accepted():
    buf = io.BytesIO()
    stripes().resize((64, 64)).save(buf, "ICNS")
    got = decode(buf.getvalue(), SPECS, Limits(input_formats=("icns",)))
    assert got.shape == (1024, 1024, 3)  # its largest icon (the writer scales up to every size)


def test_fli_keeps_its_per_frame_read_limit():
    data = (CORPUS / "pillow" / "fli_overrun2.bin").read_bytes()
    assert "fli" in DECODABLE_FORMATS
    with pytest.raises(JobError) as e:
        decode(data, SPECS, Limits(input_formats=("fli",)))
    assert e.value.reason == "corrupt-image" and "buffer overrun" in str(e.value), str(e.value)
