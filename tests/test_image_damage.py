"""Damaged inputs: refused as corrupt-image with the decoder's words, or kept
on request and marked damaged; incomplete files; what is not damage (bytes
after the image, a GIF screen larger than its frame). Every reproducer is
made here from a generated image."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from conftest import push, records, running_worker
from PIL import Image, ImageFile
from redis_server import wait_for

from fastimg.cli import process as process_command
from fastimg.image.decode import decode, decode_image
from fastimg.image.errors import InvalidJob, JobError
from fastimg.image.limits import Limits
from fastimg.image.pipeline import process
from fastimg.image.spec import SPEC_V1
from fastimg.queue import outcomes, status
from fastimg.queue.jobs import parse_job

SPECS = [SPEC_V1["thumbnail"]]


def photo(width: int = 96, height: int = 64) -> np.ndarray:
    """Smooth colours: a missing part of it is a plain grey or black band."""
    yy, xx = np.mgrid[:height, :width]
    return np.dstack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 160)]).astype(np.uint8)


def encoded(fmt: str, pixels: np.ndarray | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo() if pixels is None else pixels).save(buf, fmt, **kw)
    return buf.getvalue()


def refused(data: bytes, limits: Limits = Limits()) -> JobError:
    with pytest.raises(JobError) as e:
        decode(data, SPECS, limits)
    return e.value


def jpeg_cut_with_eoi() -> bytes:
    data = encoded("JPEG", quality=90)
    return data[: len(data) // 2] + b"\xff\xd9"


def cmyk_jpeg_cut_with_eoi() -> bytes:
    """CMYK is decoded by Pillow, after a check pass."""
    buf = io.BytesIO()
    Image.fromarray(photo(400, 300)).convert("CMYK").save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    return data[: len(data) // 2] + b"\xff\xd9"


def jpeg_corrupt_entropy() -> bytes:
    """Zeros over part of the scan: the entropy decoder meets no marker where it should."""
    data = encoded("JPEG", photo(400, 300), quality=90)
    sos = data.index(b"\xff\xda")
    mid = (sos + len(data)) // 2
    return data[:mid] + bytes(64) + data[mid + 64 :]


def png_taller_header(factor: int = 10) -> bytes:
    """IHDR height raised, its checksum made right: only the size lies."""
    data = bytearray(encoded("PNG"))
    height = struct.unpack(">I", data[20:24])[0]
    data[20:24] = struct.pack(">I", height * factor)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def png_flipped_idat() -> bytes:
    """One bit flipped inside the IDAT data, the chunk's checksum left as it was."""
    data = bytearray(encoded("PNG"))
    idat = data.index(b"IDAT")
    data[idat + 40] ^= 0x10
    return bytes(data)


def tiff_taller_header() -> bytes:
    """An uncompressed TIFF whose ImageLength is raised past the rows its strip holds."""
    data = bytearray(encoded("TIFF"))
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        at = ifd + 2 + 12 * i
        if struct.unpack("<H", data[at : at + 2])[0] == 257:  # ImageLength, a SHORT here
            data[at + 8 : at + 10] = struct.pack("<H", 640)
    return bytes(data)


def test_pillow_keeps_refusing_truncated_files():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(
    "make, words",
    [
        (jpeg_cut_with_eoi, "libjpeg: Corrupt JPEG data: premature end of data segment"),
        (jpeg_corrupt_entropy, "libjpeg: Corrupt JPEG data"),
        (cmyk_jpeg_cut_with_eoi, "libjpeg: Corrupt JPEG data: premature end of data segment"),
        (png_taller_header, "image data ends early"),
        (png_flipped_idat, "IDAT chunk at byte 33 has a wrong checksum"),
        (tiff_taller_header, "the strips or tiles hold 6144 of the 96x640 pixels"),
    ],
)
def test_damaged_image_data_is_corrupt_image_with_the_reason(make, words):
    e = refused(make())
    assert e.reason == "corrupt-image" and e.retry, str(e)
    assert words in str(e), str(e)


def test_a_png_cut_inside_its_image_data_is_refused():
    data = encoded("PNG")
    assert refused(data[: len(data) * 2 // 3]).reason == "corrupt-image"


def test_keep_partial_gives_the_decoded_part_and_says_why():
    decoded = decode_image(png_taller_header(), SPECS, Limits(), keep_partial=True)
    assert decoded.pixels.shape[:2] == (640, 96) and "ends early" in (decoded.damage or "")
    # What was in the file is there; the rows it lacked are black.
    assert np.array_equal(decoded.pixels[:64], photo())
    assert decoded.pixels[64:].max() == 0
    jpeg = decode_image(jpeg_cut_with_eoi(), SPECS, Limits(), keep_partial=True)
    assert jpeg.pixels.shape[:2] == (64, 96) and jpeg.damage.startswith("libjpeg: ")
    cmyk = decode_image(cmyk_jpeg_cut_with_eoi(), SPECS, Limits(), keep_partial=True)
    assert cmyk.pixels.shape[:2] == (300, 400) and cmyk.damage.startswith("libjpeg: ")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_bytes_after_complete_image_data_are_no_damage(fmt):
    data = encoded(fmt, photo().copy())
    plain = decode(data, SPECS)
    extended = decode(data + bytes(range(256)) * 4, SPECS)
    assert np.array_equal(plain, extended)


def test_a_gif_screen_larger_than_its_frame_is_valid():
    data = bytearray(encoded("GIF"))
    data[6:10] = struct.pack("<HH", 200, 150)  # the logical screen; the frame stays 96x64
    assert decode(bytes(data), SPECS).shape[:2] == (150, 200)


def job_file(tmp_path, data: bytes, **fields) -> dict:
    src = tmp_path / "in.png"
    src.write_bytes(data)
    job = {"jobId": "x", "inputPath": str(src), "outputDir": str(tmp_path / "out"), "operations": ["thumbnail"]}
    return {**job, **fields}


def test_the_job_param_and_the_limit_keep_a_partial_image(tmp_path):
    data = png_taller_header()
    with pytest.raises(JobError, match="ends early"):
        process(parse_job(json.dumps(job_file(tmp_path, data))))
    kept = process(parse_job(json.dumps(job_file(tmp_path, data, keepPartial=True))))
    assert kept.outputs and "ends early" in (kept.damage or "")
    by_flag = process(parse_job(json.dumps(job_file(tmp_path, data))), Limits(keep_partial=True))
    assert by_flag.damage == kept.damage
    with pytest.raises(JobError, match="ends early"):  # the job's own false wins over the flag
        process(parse_job(json.dumps(job_file(tmp_path, data, keepPartial=False))), Limits(keep_partial=True))
    intact = process(parse_job(json.dumps(job_file(tmp_path, encoded("PNG"), keepPartial=True))))
    assert intact.damage is None


def test_keep_partial_must_be_a_boolean(tmp_path):
    with pytest.raises(InvalidJob, match="keepPartial must be true or false"):
        parse_job(json.dumps(job_file(tmp_path, b"", keepPartial="yes")))


def test_the_done_record_says_the_image_is_damaged(tmp_path):
    job = parse_job(json.dumps(job_file(tmp_path, b"", keepPartial=True)))
    outcome = outcomes.done(job, [], {"total": 1.0}, 10, "w1", "image data ends early")
    assert outcome.record["damaged"] == "image data ends early" and "damaged" in outcomes.RECORD_FIELDS
    assert outcome.status() == ("done", {"outputs": [], "attempts": 1, "damaged": "image data ends early"})
    assert "damaged" not in outcomes.done(job, [], {"total": 1.0}, 10, "w1").status()[1]


def test_process_refuses_by_default_and_keeps_with_the_flag(tmp_path, capsys):
    src = tmp_path / "tall.png"
    src.write_bytes(png_taller_header())
    assert process_command.main([str(src), "-o", str(tmp_path / "a"), "-j", "1"]) == 1
    assert "corrupt-image: damaged image data" in capsys.readouterr().out
    assert process_command.main([str(src), "-o", str(tmp_path / "b"), "-j", "1", "--keep-partial"]) == 0
    out = capsys.readouterr().out
    assert "damaged (outputs made from what could be decoded):" in out and "ends early" in out, out
    assert (tmp_path / "b" / "tall_thumbnail.webp").exists()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
@pytest.mark.parametrize("length", range(1, 12))
def test_the_start_of_a_signature_is_an_incomplete_file(fmt, length):
    e = refused(encoded(fmt)[:length])
    assert e.reason == "corrupt-image" and e.retry, str(e)
    if length < {"JPEG": 3, "PNG": 8, "GIF": 6, "WEBP": 12}[fmt]:  # JPEG is known from 3 bytes on
        assert "inside a" in str(e), str(e)


def test_a_short_file_of_no_known_signature_stays_unsupported():
    assert refused(b"hello").reason == "unsupported-format"
    assert refused(b"\xff\x0a\x00").reason == "unsupported-format"  # JPEG XL's codestream


def test_the_worker_retries_damage_and_records_a_kept_partial_image(r, redis_server, uploads):
    src = uploads / "user1" / "tall.png"
    src.write_bytes(png_taller_header())
    out = str(uploads / "user1" / "processed")
    refused = {"jobId": "tall", "inputPath": str(src), "outputDir": out, "operations": ["thumbnail"]}
    kept = {**refused, "jobId": "tall-kept", "keepPartial": True}
    with running_worker(redis_server.url, max_retries=0):
        push(r, refused, kept)
        wait_for(lambda: r.llen("image:failed") == 1 and r.llen("image:done") == 1, what="both outcomes")
    failed = records(r, "image:failed")[0]
    assert failed["reason"] == "corrupt-image" and "ends early" in failed["error"]
    done = records(r, "image:done")[0]
    assert done["jobId"] == "tall-kept" and "ends early" in done["damaged"]
    assert "ends early" in status.read(r, "tall-kept")["damaged"]
