"""The accepted formats (fastimg.image.formats): what --input-formats may
name, and that a file in a format outside the list never reaches a decoder."""

from __future__ import annotations

import subprocess

import corpus
import pytest
from conftest import WORKER_CMD
from PIL import Image, PpmImagePlugin

from fastimg.image.decode import decode, header
from fastimg.image.errors import JobError
from fastimg.image.formats import parse_input_formats
from fastimg.image.limits import DEFAULT_INPUT_FORMATS, Limits
from fastimg.image.spec import SPEC_V1

THUMB = [SPEC_V1["thumbnail"]]


def ppm() -> bytes:
    return corpus.save(Image.fromarray(corpus.pattern()), "PPM")


def test_formats_outside_the_list_are_refused_before_any_decoder(monkeypatch):
    def never(self):
        raise AssertionError("the PPM decoder parsed a file of a format not accepted")

    monkeypatch.setattr(PpmImagePlugin.PpmImageFile, "_open", never)
    with pytest.raises(JobError) as e:
        decode(ppm(), THUMB, Limits())
    assert e.value.reason == "unsupported-format" and not e.value.retry
    assert str(e.value) == f"ppm images are not accepted (accepted: {', '.join(DEFAULT_INPUT_FORMATS)})"
    with pytest.raises(JobError, match="ppm images are not accepted"):
        header(ppm())


def test_an_operator_can_accept_more_formats():
    limits = Limits(input_formats=DEFAULT_INPUT_FORMATS + ("ppm", "tga"))
    assert decode(ppm(), THUMB, limits).shape == (corpus.H, corpus.W, 3)
    tga = corpus.save(Image.fromarray(corpus.pattern()), "TGA")  # no signature: tried only when listed
    with pytest.raises(JobError, match="not an image in an accepted format"):
        decode(tga, THUMB, Limits())
    assert decode(tga, THUMB, limits).shape == (corpus.H, corpus.W, 3)


def test_a_file_in_an_accepted_format_is_parsed_by_that_format_only(monkeypatch):
    # JPEG's signature with a PPM body: only the JPEG decoder may look at it.
    monkeypatch.setattr(PpmImagePlugin.PpmImageFile, "_open", lambda self: pytest.fail("PPM decoder ran"))
    with pytest.raises(JobError) as e:
        decode(b"\xff\xd8\xff" + ppm(), THUMB, Limits(input_formats=DEFAULT_INPUT_FORMATS + ("ppm",)))
    assert e.value.reason in ("corrupt-image", "unsupported-format")


def test_format_names_are_checked():
    assert parse_input_formats(" JPEG, png ,avif") == ("jpeg", "png", "avif")
    for name, why in [
        ("wmf", "only identifies"),
        ("grib", "only identifies"),
        ("heic", "not a format Pillow reads"),
        ("", "no formats"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_input_formats(name)


def test_input_formats_flag(tmp_path):
    photo = tmp_path / "p.ppm"
    photo.write_bytes(ppm())

    def run(*a: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            WORKER_CMD + ["process", str(photo), "-o", str(tmp_path / "o"), *a],
            capture_output=True,
            text=True,
            timeout=120,
        )

    res = run()
    assert res.returncode == 1 and "p.ppm: unsupported-format: ppm images are not accepted" in res.stdout
    assert run("--input-formats", "jpeg,ppm").returncode == 0
    res = run("--input-formats", "wmf")
    assert res.returncode == 2 and "only identifies" in res.stderr
