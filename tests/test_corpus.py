"""Files from public test corpora (tests/data/corpus/README.md), each with its
expected class in tests/data/corpus/expected.tsv: decoded right (the thumbnail
against a plain Pillow one) or refused with the right reason, and nothing
else; plus the side limit, exact 16 bits and damaged files."""

from __future__ import annotations

import io
import struct
import subprocess
import zlib
from pathlib import Path

import corpus
import numpy as np
import pytest
from conftest import WORKER_CMD, png_header_only
from PIL import Image
from pillow_thumbnail import colour_stats, reference_thumbnail

from fastimg.image.decode import decode, header
from fastimg.image.errors import JobError
from fastimg.image.limits import Limits
from fastimg.image.render import render
from fastimg.image.spec import SPEC_V1

CORPUS = Path(__file__).parent / "data" / "corpus"


def expected_classes():
    rows = {}
    for line in (CORPUS / "expected.tsv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, expected, _why = line.split("\t")
            rows[name] = expected
    return rows


EXPECTED = expected_classes()
THUMB = [SPEC_V1["thumbnail"]]


def test_the_table_covers_every_corpus_file():
    files = {
        str(p.relative_to(CORPUS))
        for p in CORPUS.rglob("*")
        if p.is_file() and p.parent != CORPUS and p.parent.name != "LICENSES"
    }
    assert files == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_is_decoded_right_or_refused_with_its_reason(name):
    data = (CORPUS / name).read_bytes()
    expected = EXPECTED[name]
    if expected != "ok":
        with pytest.raises(JobError) as e:
            decode(data, THUMB, Limits())
        assert e.value.reason == expected, str(e.value)
        assert e.value.retry == (expected == "corrupt-image")
        if expected in ("unsupported-format", "too-large"):
            with pytest.raises(JobError) as e:
                header(data)
            assert e.value.reason == expected, str(e.value)
        return
    pixels = decode(data, THUMB, Limits())
    thumb = render(pixels, ["thumbnail"], SPEC_V1)["thumbnail"]
    ref = reference_thumbnail(data)
    assert abs(thumb.shape[0] - ref.shape[0]) <= 1 and abs(thumb.shape[1] - ref.shape[1]) <= 1
    got, want = colour_stats(thumb), colour_stats(ref)
    assert np.abs(got - want).max() <= 2, (got.round(1), want.round(1))
    h = header(data)
    with Image.open(io.BytesIO(data)) as im:
        assert (h.width, h.height) == im.size
    assert h.bands == (1 if pixels.ndim == 2 else pixels.shape[2])


def test_process_runs_the_whole_corpus_in_one_batch(tmp_path):
    files = [str(CORPUS / name) for name in sorted(EXPECTED)]
    res = subprocess.run(
        WORKER_CMD + ["process", *files, "-o", str(tmp_path), "--ops", "thumbnail", "-j", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    ok = sum(1 for v in EXPECTED.values() if v == "ok")
    assert res.returncode == 1
    assert f"{ok} ok, {len(files) - ok} failed" in res.stdout, res.stdout
    for name, expected in EXPECTED.items():
        if expected != "ok":
            assert f"{CORPUS / name}: {expected}: " in res.stdout
    # Library warnings (Pillow's, libtiff's) stay with the job; nothing is printed raw.
    assert res.stderr == ""


def test_palette_alpha_is_kept():
    # Pillow's palette.dds: a palette whose entries carry alpha.
    data = (CORPUS / "pillow" / "palette.dds").read_bytes()
    got = decode(data, THUMB, Limits(input_formats=("dds",)))
    with Image.open(io.BytesIO(data)) as im:
        want = np.asarray(im.convert("RGBA"))
    assert got.shape == want.shape and (want[..., 3] < 255).any()
    np.testing.assert_array_equal(got, want)


# -- sizes --------------------------------------------------------------------


def test_a_side_beyond_the_kernels_is_too_large_from_the_header():
    data = png_header_only(2_000_000, 50)
    for call in (lambda: header(data), lambda: decode(data, THUMB, Limits())):
        with pytest.raises(JobError) as e:
            call()
        assert e.value.reason == "too-large" and "2000000x50" in str(e.value) and "1048576" in str(e.value)


def test_max_pixels_above_pillows_own_limit_takes_effect():
    data = png_header_only(20_000, 10_000)  # 200 MP: beyond Pillow's decompression-bomb error (179 MP)
    assert (header(data, Limits(max_pixels=300_000_000)).width, 10_000) == (20_000, 10_000)
    with pytest.raises(JobError, match="limit 150000000") as e:
        header(data, Limits(max_pixels=150_000_000))
    assert e.value.reason == "too-large"


# -- 16 bits ------------------------------------------------------------------


def test_pillows_deflate_16_bit_tiff_is_exact():
    data = (CORPUS / "pillow" / "tiff_16bit_RGB.tiff").read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        offset, count = im.tag_v2[324][0], im.tag_v2[325][0]  # one 256x256 deflate tile
        w, h = im.size
        assert im.tag_v2[259] == 8 and im.tag_v2.get(317, 1) == 1
    tile = np.frombuffer(zlib.decompress(data[offset : offset + count]), "<u2").reshape(256, 256, 3)
    np.testing.assert_array_equal(decode(data, THUMB, Limits()), np.floor(tile[:h, :w] / 257 + 0.5))


def deflate_tiff16(arr: np.ndarray, extra: int) -> bytes:
    """A deflate-compressed big-endian 16-bit RGBA TIFF; ``extra`` is the
    alpha's ExtraSamples value (1 premultiplied, 2 straight)."""
    h, w, c = arr.shape
    body = zlib.compress(arr.astype(">u2").tobytes())
    tags = [
        (256, 3, w),
        (257, 3, h),
        (258, 3, None),
        (259, 3, 8),
        (262, 3, 2),
        (273, 4, None),
        (277, 3, c),
        (278, 3, h),
        (279, 4, len(body)),
        (284, 3, 1),
        (338, 3, extra),
    ]
    bits = 8 + 2 + 12 * len(tags) + 4
    data = bits + 8
    out = bytearray(b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", len(tags)))
    for tag, typ, value in tags:
        count = 4 if tag == 258 else 1
        value = bits if tag == 258 else data if tag == 273 else value
        out += struct.pack(">HHI", tag, typ, count)
        out += struct.pack(">HH", value, 0) if typ == 3 and count == 1 else struct.pack(">I", value)
    return bytes(out + struct.pack(">I", 0) + struct.pack(">HHHH", 16, 16, 16, 16) + body)


@pytest.mark.parametrize("extra", [1, 2])
def test_16_bit_rgba_through_libtiff_is_exact(extra):
    rng = np.random.default_rng(extra)
    wide = rng.integers(0, 65536, (21, 17, 4)).astype(np.uint16)
    wide[..., 3] = rng.integers(30000, 65536, (21, 17))
    straight = wide[..., :3].astype(np.float64)
    if extra == 1:  # store premultiplied; expect the straight colour back
        wide[..., :3] = np.floor(straight * wide[..., 3:] / 65535 + 0.5).astype(np.uint16)
        straight = wide[..., :3] * 65535.0 / wide[..., 3:]
    got = decode(deflate_tiff16(wide, extra), THUMB, Limits()).astype(int)
    want = np.floor(np.dstack([straight, wide[..., 3]]) / 257 + 0.5)
    assert np.abs(got - want).max() <= (1 if extra == 1 else 0)  # premultiplying at 16 bits loses < 1 level


def test_16_bit_grey_alpha_png_is_exact():
    wide = np.random.default_rng(3).integers(0, 65536, (9, 13, 2)).astype(np.uint16)
    got = decode(corpus.png16(wide), THUMB, Limits())
    rounded = np.floor(wide / 257 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(got, np.dstack([rounded[..., 0]] * 3 + [rounded[..., 1]]))


# -- damaged files ------------------------------------------------------------


def test_a_truncated_jpeg_with_a_profile_is_corrupt_not_blank():
    jpeg = corpus.save(Image.fromarray(corpus.pattern(480, 320)), "JPEG", icc_profile=corpus.srgb_icc())
    with pytest.raises(JobError) as e:
        decode(jpeg[: len(jpeg) * 2 // 3], THUMB, Limits())
    assert e.value.reason == "corrupt-image"


def test_library_warnings_go_with_the_failure():
    data = (CORPUS / "pillow" / "crash-2020-10-test.tif").read_bytes()
    with pytest.raises(JobError, match="library warnings: UserWarning: Tag data larger than file"):
        decode(data, THUMB, Limits())


def test_libtiff_messages_go_with_the_failure_not_to_stderr(capfd):
    good = deflate_tiff16(np.full((40, 30, 4), 30000, np.uint16), 2)
    body = 8 + 2 + 12 * 11 + 4 + 8  # where deflate_tiff16 puts the compressed strip
    broken = good[:body] + bytes(b ^ 0x5A for b in good[body:])
    with pytest.raises(JobError) as e:
        decode(broken, THUMB, Limits())
    assert e.value.reason == "corrupt-image" and "libtiff: ZIPDecode" in str(e.value), str(e.value)
    assert capfd.readouterr().err == ""


def test_a_page_chain_damaged_after_the_first_page_uses_the_first():
    image = Image.fromarray(corpus.pattern())
    data = bytearray(corpus.save(image, "TIFF", save_all=True, append_images=[image]))
    first = struct.unpack_from("<I", data, 4)[0]
    second = struct.unpack_from("<I", data, first + 2 + 12 * struct.unpack_from("<H", data, first)[0])[0]
    for i in range(struct.unpack_from("<H", data, second)[0]):
        if struct.unpack_from("<H", data, second + 2 + 12 * i)[0] == 256:  # ImageWidth of page 2
            struct.pack_into("<H", data, second + 2 + 12 * i, 65000)
    with Image.open(io.BytesIO(bytes(data))) as im, pytest.raises(TypeError):
        _ = im.n_frames  # what used to escape as a traceback
    np.testing.assert_array_equal(decode(bytes(data), THUMB, Limits()), corpus.pattern())


def test_every_16_bit_value_rounds_exactly():
    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    wide = np.dstack([every, every[::-1], every.T])
    got = decode(corpus.png16(wide), [SPEC_V1["low-quality"]], Limits())
    np.testing.assert_array_equal(got, np.floor(wide / 257 + 0.5).astype(np.uint8))
