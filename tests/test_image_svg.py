"""SVG uploads: rendered at the outputs' size by resvg in a limited child
process, after a check that refuses anything reaching outside the upload."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fastimg.image import svg
from fastimg.image.admission import estimate
from fastimg.image.decode import decode, header
from fastimg.image.errors import JobError
from fastimg.image.limits import DEFAULT_INPUT_FORMATS, Limits
from fastimg.image.pipeline import process
from fastimg.image.spec import SPEC_V1
from fastimg.queue.jobs import parse_job

SPECS = list(SPEC_V1.values())
NS = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'


def drawing(body: str, size: str = 'width="120" height="60"', prolog: str = "") -> bytes:
    return f"{prolog}<svg {NS} {size}>{body}</svg>".encode()


HALVES = '<rect width="60" height="60" fill="#ff0000"/><rect x="60" width="60" height="60" fill="#0000ff"/>'


def test_svg_is_accepted_by_default_and_drawn():
    assert "svg" in DEFAULT_INPUT_FORMATS
    got = decode(drawing(HALVES), SPECS)
    assert got.shape == (60, 120, 4)  # its own size: smaller than every output, never enlarged
    assert np.array_equal(got[30, 10], [255, 0, 0, 255]) and np.array_equal(got[30, 110], [0, 0, 255, 255])


def test_the_size_comes_from_width_height_or_the_viewbox_and_is_bounded_by_the_outputs():
    assert decode(drawing(HALVES, 'viewBox="0 0 120 60"'), SPECS).shape == (60, 120, 4)
    assert decode(drawing(HALVES, 'width="4in" height="2in"'), SPECS).shape == (192, 384, 4)
    huge = drawing(HALVES, 'width="1000000" height="500000" viewBox="0 0 120 60"')
    assert decode(huge, SPECS).shape == (640, 1280, 4)  # the largest output, not a 500 Gpx canvas
    assert (header(huge).width, header(huge).height) == (16384, 8192)
    assert estimate(header(huge), SPECS, len(huge)) < 200 << 20
    assert header(drawing(HALVES, 'width="120" height="60" viewBox="0 0 abc"')).width == 120


def test_an_svg_job_makes_the_three_outputs(tmp_path):
    src = tmp_path / "logo.svg"
    src.write_bytes(drawing(HALVES, 'width="1200" height="600" viewBox="0 0 120 60"'))
    job = {"jobId": "logo", "inputPath": str(src), "outputDir": str(tmp_path / "out"), "operations": list(SPEC_V1)}
    result = process(parse_job(json.dumps(job)))
    sizes = {o.operation: Image.open(o.path).size for o in result.outputs}
    assert sizes == {"thumbnail": (320, 160), "blur": (640, 320), "low-quality": (1200, 600)}


@pytest.mark.parametrize(
    "body, prolog",
    [
        ('<image href="/etc/hostname" width="10" height="10"/>', ""),
        ('<image xlink:href="secret.png" width="10" height="10"/>', ""),
        ('<image href="../secret.png" width="10" height="10"/>', ""),
        ('<image href="file:///etc/hostname" width="10" height="10"/>', ""),
        ('<image href="http://169.254.169.254/latest/meta-data" width="10" height="10"/>', ""),
        ('<use href="other.svg#icon"/>', ""),
        ('<rect width="10" height="10" fill="url(http://example.com/p.svg#g)"/>', ""),
        ('<rect width="10" height="10" style="fill: url(/etc/p.svg#g)"/>', ""),
        ("<style>@import 'http://example.com/a.css';</style>", ""),
        ("<style>rect { fill: url('file:///etc/p.svg#g') }</style>", ""),
        ("<text>&x;</text>", '<!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/hostname">]>'),
    ],
)
def test_references_outside_the_upload_are_refused_before_rendering(body, prolog):
    with pytest.raises(JobError) as e:
        decode(drawing(body, prolog=prolog), SPECS)
    assert e.value.reason == "unsupported-format" and "outside the upload" in str(e.value), str(e.value)


def test_references_inside_the_upload_are_drawn():
    gradient = '<defs><linearGradient id="g"><stop offset="0" stop-color="#00ff00"/></linearGradient></defs>'
    pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="
    body = gradient + '<rect width="60" height="60" fill="url(#g)"/>'
    body += f'<image x="60" width="60" height="60" href="data:image/png;base64,{pixel}"/>'
    got = decode(drawing(body), SPECS)
    assert got[30, 10, 1] == 255 and got[30, 10, 0] == 0  # the gradient's green
    assert got[30, 90, 3] == 255  # the inline image


def test_entity_expansion_is_bounded():
    levels = "".join(f'<!ENTITY e{i} "{f"&e{i - 1};" * 10 if i else "x" * 10}">' for i in range(7))
    with pytest.raises(JobError) as e:
        decode(drawing("<text>&e6;</text>", prolog=f"<!DOCTYPE svg [{levels}]>"), SPECS)
    assert e.value.reason == "too-large" and "expand" in str(e.value)
    wide = f'<!DOCTYPE svg [<!ENTITY x "{"y" * 1000}">]>'
    with pytest.raises(JobError) as e:
        decode(drawing("<text>" + "&x;" * 1100 + "</text>", prolog=wide), SPECS)
    assert e.value.reason == "too-large"
    illustrator = '<!DOCTYPE svg [<!ENTITY fill "#ff0000">]>'  # small entities, as drawing programs write
    assert decode(drawing('<rect width="120" height="60" fill="&fill;"/>', prolog=illustrator), SPECS)[5, 5, 0] == 255


def test_the_renderer_reads_nothing_near_it(tmp_path, monkeypatch):
    # Even past the check, the child renders in an empty directory: a relative
    # reference finds no file there, though one lies in the worker's directory.
    Image.new("RGB", (10, 10), (255, 0, 0)).save(tmp_path / "secret.png")
    monkeypatch.chdir(tmp_path)
    got = svg.render(drawing('<image href="secret.png" width="120" height="60"/>'), 120, 60)
    assert got[..., 3].max() == 0


def test_the_renderer_runs_under_its_memory_limit(monkeypatch):
    monkeypatch.setattr(svg, "RENDER_MEMORY", 64 << 20)
    with pytest.raises(JobError) as e:
        decode(drawing(HALVES, 'width="8000" height="8000"'), [SPEC_V1["low-quality"].__class__(8000, 8000, 80)])
    assert e.value.reason == "too-large" and not e.value.retry, str(e.value)


def test_a_damaged_svg_is_corrupt_and_other_roots_are_not_svg():
    with pytest.raises(JobError) as e:
        decode(drawing(HALVES)[:-20], SPECS)
    assert e.value.reason == "corrupt-image" and e.value.retry
    with pytest.raises(JobError, match="svg images are not accepted"):
        decode(drawing(HALVES), SPECS, Limits(input_formats=("png",)))
