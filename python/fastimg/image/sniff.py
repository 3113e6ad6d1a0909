"""What kind of image a file is, from its first bytes. Shared by the producer
(which must stay light: no numpy, no native module) and the decoder."""

from __future__ import annotations

IMAGE_TYPES = ("jpeg", "png", "gif", "webp", "bmp", "tiff", "svg")  # the seed server's image MIME types


def detect_image_type(head: bytes) -> str | None:
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
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):  # classic and BigTIFF
        return "tiff"
    text = head[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<?xml", b"<svg", b"<!doctype svg")) and b"<svg" in text:
        return "svg"
    return None


# The signatures of the seed's types that cannot be taken for anything else
# before they are complete: (type, signature, byte positions any value may hold).
_PREFIXES = (
    ("png", b"\x89PNG\r\n\x1a\n", range(0)),
    ("jpeg", b"\xff\xd8\xff", range(0)),
    ("gif", b"GIF89a", range(0)),
    ("gif", b"GIF87a", range(0)),
    ("webp", b"RIFF\0\0\0\0WEBP", range(4, 8)),  # RIFF, the file's size, WEBP
)


def incomplete_signature(head: bytes) -> str | None:
    """The type of a file that ends inside its signature (the first 1 to 11
    bytes of a PNG, JPEG, GIF or WebP), most often an upload still arriving;
    None otherwise."""
    for kind, sig, free in _PREFIXES:
        if 0 < len(head) < len(sig) and all(i in free or b == sig[i] for i, b in enumerate(head)):
            return kind
    return None


# Other formats an upload may be in, by signature (offset, bytes), so that a
# refusal can name what it refused. Names are Pillow's format names in lower
# case where Pillow has the format.
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "jpeg2000"),
    (0, b"\xffO\xffQ", "jpeg2000"),
    (0, b"\xff\x0a", "jxl"),
    (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n", "jxl"),
    (0, b"8BPS", "psd"),
    (0, b"DDS ", "dds"),
    (0, b"qoif", "qoi"),
    (0, b"icns", "icns"),
    (0, b"%!PS", "eps"),
    (0, b"\xc5\xd0\xd3\xc6", "eps"),
    (0, b"%PDF", "pdf"),
    (0, b"SIMPLE  =", "fits"),
    (0, b"#?RADIANCE", "hdr"),
    (0, b"#?RGBE", "hdr"),
    (0, b"v/1\x01", "exr"),
    (0, b"\xd7\xcd\xc6\x9a", "wmf"),
    (0, b"\x01\x00\x09\x00\x00\x03", "wmf"),
    (40, b" EMF", "emf"),
    (0, b"BLP1", "blp"),
    (0, b"BLP2", "blp"),
    (0, b"\x01\xda", "sgi"),
    (0, b"\x59\xa6\x6a\x95", "sun"),
    (0, b"BUFR", "bufr"),
    (0, b"GRIB", "grib"),
    (0, b"\x89HDF\r\n\x1a\n", "hdf5"),
    (0, b"gimp xcf", "xcf"),
    (0, b"/* XPM */", "xpm"),
    (0, b"FTEX", "ftex"),
    (0, b"\xb1\x68\xde\x3a", "dcx"),
    (0, b"DanM", "msp"),
    (0, b"LinS", "msp"),
    (0, b"\x80\xe8\x00\x00", "pixar"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole"),  # FlashPix, MIC, Office files
    (20, b"GIMP", "gbr"),
    (4, b"\x11\xaf", "fli"),
    (4, b"\x12\xaf", "fli"),
)
# ISO base media files (HEIF family) by their major brand.
_BRANDS = {
    b"avif": "avif",
    b"avis": "avif",
    b"heic": "heif",
    b"heix": "heif",
    b"hevc": "heif",
    b"mif1": "heif",
    b"msf1": "heif",
    b"crx ": "cr3",
    b"jxl ": "jxl",
}


def identify(head: bytes) -> str | None:
    """A name for the format of a file from its first bytes (the seed's types,
    then other formats by signature), or None when no signature matches."""
    kind = detect_image_type(head)
    if kind is not None:
        return kind
    if head[4:8] == b"ftyp":
        return _BRANDS.get(head[8:12], "isobmff")
    if head[:2] == b"\x00\x00" and head[2:4] in (b"\x01\x00", b"\x02\x00") and head[4:6] != b"\x00\x00":
        # An icon directory with at least one entry; a TGA header can start the same way.
        return "ico" if head[2] == 1 else "cur"
    for offset, magic, name in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return name
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"1234567fF" and head[2:3] in b" \t\r\n":
        return "ppm"  # the Netpbm family: PBM, PGM, PPM, PAM, PFM
    if head[:1] == b"\x0a" and head[1:2] in b"\x00\x02\x03\x04\x05" and head[2:3] in b"\x00\x01":
        return "pcx"
    return None


# Every name identify() can return: formats outside this set have no signature.
IDENTIFIABLE_FORMATS = (
    frozenset(IMAGE_TYPES)
    | {name for _, _, name in _SIGNATURES}
    | set(_BRANDS.values())
    | {"isobmff", "ppm", "pcx", "ico", "cur"}
)
