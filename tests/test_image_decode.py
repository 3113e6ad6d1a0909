"""Every input kind an upload service sees, through the worker's pipeline:
formats (detected from content), orientation, colour profiles, alpha, 16-bit,
animation, shrink-on-load, and hostile files."""

from __future__ import annotations

import io
import json
import os
import resource

import corpus
import numpy as np
import pytest
from conftest import png_header_only, push, records, running_worker
from corpus import QUADRANTS, pattern, quadrant_means, save
from PIL import Image
from redis_server import wait_for

from fastimg.image.decode import decode
from fastimg.image.errors import JobError
from fastimg.image.limits import Limits
from fastimg.image.pipeline import process
from fastimg.image.render import render
from fastimg.image.spec import SPEC_V1, OutputSpec
from fastimg.queue.jobs import parse_job

ALL_OPS = ["thumbnail", "blur", "low-quality"]


def run(tmp_path, data: bytes, name: str = "input.bin", ops=ALL_OPS, params=None, limits=Limits()):
    src = tmp_path / name
    src.write_bytes(data)
    job = {"jobId": "out", "inputPath": str(src), "outputDir": str(tmp_path / "processed"), "operations": ops}
    if params:
        job["params"] = params
    return process(parse_job(json.dumps(job)), limits)


def thumbnail(tmp_path) -> Image.Image:
    im = Image.open(tmp_path / "processed" / "out_thumbnail.webp")
    im.load()
    return im


def assert_colours(img: np.ndarray, expected=QUADRANTS, tol: float = 28) -> None:
    got = quadrant_means(img)
    for k, colour in expected.items():
        assert np.abs(got[k] - colour).max() <= tol, (k, got[k], colour)


def rgba_disc(size: int = 600) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    img = np.zeros((size, size, 4), np.uint8)
    img[..., :3] = 255  # transparent white: straight-alpha resampling would bleed it in
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    img[inside] = (230, 20, 20, 255)
    return img


def animated(fmt: str, **kw) -> bytes:
    frames = [Image.fromarray(pattern(seed=i)) for i in range(3)]
    frames[1] = Image.new("RGB", frames[0].size, (0, 0, 255))
    frames[2] = Image.new("RGB", frames[0].size, (0, 255, 0))
    if fmt == "GIF":
        frames = [f.convert("P", palette=Image.Palette.ADAPTIVE) for f in frames]
    return save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **kw)


def build_inputs():
    rgb = Image.fromarray(pattern())
    swapped = corpus.icc_profile(
        {"r": corpus.SRGB_PRIMARIES["g"], "g": corpus.SRGB_PRIMARIES["r"], "b": corpus.SRGB_PRIMARIES["b"]}
    )
    grey = {k: (v[0] * 299 + v[1] * 587 + v[2] * 114) / 1000 for k, v in QUADRANTS.items()}
    grey_q = {k: (g, g, g) for k, g in grey.items()}
    sixteen = pattern().astype(np.uint16) * 257
    return {
        # name: (bytes, expected quadrant colours or None, alpha expected)
        "jpeg-baseline": (save(rgb, "JPEG", quality=92), QUADRANTS, False),
        "jpeg-progressive": (save(rgb, "JPEG", quality=92, progressive=True), QUADRANTS, False),
        "jpeg-grayscale": (save(rgb.convert("L"), "JPEG", quality=92), grey_q, False),
        "jpeg-cmyk": (save(rgb.convert("CMYK"), "JPEG", quality=95), QUADRANTS, False),
        "jpeg-icc-srgb": (save(rgb, "JPEG", quality=92, icc_profile=corpus.srgb_icc()), QUADRANTS, False),
        "jpeg-icc-swapped-primaries": (save(rgb, "JPEG", quality=92, icc_profile=swapped), None, False),
        "png-rgb8": (save(rgb, "PNG"), QUADRANTS, False),
        "png-rgb16": (corpus.png16(sixteen), QUADRANTS, False),
        "png-grey8": (save(rgb.convert("L"), "PNG"), grey_q, False),
        "png-grey16": (
            save(Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257), "PNG"),
            grey_q,
            False,
        ),
        "png-grey-alpha": (save(Image.fromarray(rgba_disc()).convert("LA"), "PNG"), None, True),
        "png-palette-transparency": (
            save(Image.fromarray(rgba_disc()).convert("P", palette=Image.Palette.ADAPTIVE), "PNG", transparency=0),
            None,
            True,
        ),
        "png-rgba": (save(Image.fromarray(rgba_disc()), "PNG"), None, True),
        "gif-palette": (save(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"), QUADRANTS, False),
        "gif-transparency": (
            save(Image.fromarray(rgba_disc()).convert("P", palette=Image.Palette.ADAPTIVE), "GIF", transparency=0),
            None,
            True,
        ),
        "gif-animated": (animated("GIF"), QUADRANTS, False),
        "webp-lossy": (save(rgb, "WEBP", quality=90), QUADRANTS, False),
        "webp-lossless": (save(rgb, "WEBP", lossless=True), QUADRANTS, False),
        "webp-alpha": (save(Image.fromarray(rgba_disc()), "WEBP", lossless=True), None, True),
        "webp-animated": (animated("WEBP", lossless=True), QUADRANTS, False),
        "bmp": (save(rgb, "BMP"), QUADRANTS, False),
        "tiff-8bit": (save(rgb, "TIFF"), QUADRANTS, False),
        "tiff-16bit": (corpus.tiff16(sixteen), QUADRANTS, False),
        "tiff-multipage": (
            save(rgb, "TIFF", save_all=True, append_images=[Image.new("RGB", rgb.size, (0, 0, 255))]),
            QUADRANTS,
            False,
        ),
    }


INPUTS = build_inputs()


@pytest.mark.parametrize("kind", sorted(INPUTS))
def test_every_input_kind_makes_correct_outputs(tmp_path, kind):
    data, colours, alpha = INPUTS[kind]
    # A misleading extension: the format comes from the content.
    result = run(tmp_path, data, name="upload.jpg" if not kind.startswith("jpeg") else "upload.png")
    assert [o.operation for o in result.outputs] == ALL_OPS
    w, h = Image.open(io.BytesIO(data)).size
    for o in result.outputs:
        with Image.open(o.path) as im:
            assert im.format == "WEBP" and (im.width, im.height) == (o.width, o.height)
            assert im.mode == ("RGBA" if alpha else "RGB"), (kind, im.mode)
            box = SPEC_V1[o.operation].width
            assert (im.width, im.height) == (w, h) if max(w, h) <= box else max(im.size) == box
    thumb = np.asarray(thumbnail(tmp_path))
    if colours is not None:
        assert_colours(thumb, colours)
    if kind == "jpeg-icc-swapped-primaries":
        # The file's "red" is the profile's red primary, which is sRGB green.
        got = quadrant_means(thumb)
        assert got["tl"][1] > 150 and got["tl"][0] < 90, got["tl"]
        assert got["tr"][0] > 150 and got["tr"][1] < 90, got["tr"]
    if alpha:
        a = thumb[..., 3]
        assert a[0, 0] == 0 and a[a.shape[0] // 2, a.shape[1] // 2] == 255
        edge = (a > 40) & (a < 215)
        assert edge.any()
        # No dark and no white fringe: the soft edge keeps the disc's colour.
        rgb = thumb[edge][:, :3].astype(int)
        if kind == "png-grey-alpha":
            assert np.abs(rgb - rgb[:, :1]).max() <= 12 and np.median(rgb[:, 0]) < 110
        else:
            assert np.median(rgb[:, 0]) > 170 and np.median(rgb[:, 1]) < 80


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    result = run(tmp_path, corpus.oriented_jpeg(orientation))
    assert all((o.width, o.height) == (240, 160) for o in result.outputs)  # upright landscape
    assert_colours(np.asarray(thumbnail(tmp_path)))


def test_outputs_carry_no_metadata(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    exif[0x0112] = 1
    run(tmp_path, save(Image.fromarray(pattern()), "JPEG", exif=exif.tobytes(), icc_profile=corpus.srgb_icc()))
    for op in ALL_OPS:
        raw = (tmp_path / "processed" / f"out_{op}.webp").read_bytes()
        assert b"EXIF" not in raw and b"ICCP" not in raw and b"XMP " not in raw and b"CameraMaker" not in raw


@pytest.mark.parametrize("maker", [corpus.png16, corpus.tiff16])
def test_16_bit_input_is_rounded_not_truncated(maker):
    rng = np.random.default_rng(16)
    wide = rng.integers(0, 65536, (9, 11, 3)).astype(np.uint16)
    wide[0, :3, 0] = (0x00FF, 0x01FF, 0x7FFF)  # values where truncating and rounding differ
    got = decode(maker(wide), [SPEC_V1["thumbnail"]], Limits())
    np.testing.assert_array_equal(got, np.floor(wide / 257 + 0.5).astype(np.uint8))


def test_16_bit_grey_png_is_rounded():
    wide = np.random.default_rng(17).integers(0, 65536, (13, 7)).astype(np.uint16)
    got = decode(save(Image.fromarray(wide), "PNG"), [SPEC_V1["thumbnail"]], Limits())
    np.testing.assert_array_equal(got, np.floor(wide / 257 + 0.5).astype(np.uint8))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def test_shrink_on_load_matches_full_decode():
    with Image.open(os.path.join(os.path.dirname(__file__), "data", "retina.jpg")) as im:
        big = im.convert("RGB").resize((4000, 3000), Image.BICUBIC)
    data = save(big, "JPEG", quality=90)
    specs = [SPEC_V1[op] for op in ALL_OPS]
    shrunk = decode(data, specs, Limits())
    full = decode(data, [OutputSpec(width=4000, height=3000, quality=80)], Limits())
    assert full.shape[:2] == (3000, 4000) and shrunk.shape[0] < 3000  # draft mode did shrink
    a, b = render(shrunk, ALL_OPS, SPEC_V1), render(full, ALL_OPS, SPEC_V1)
    for op in ALL_OPS:
        assert a[op].shape == b[op].shape
        assert psnr(a[op], b[op]) >= 40, op


def test_params_change_the_outputs(tmp_path):
    params = {
        "thumbnail": {"width": 100, "height": 100, "quality": 50},
        "blur": {"sigma": 3},
        "low-quality": {"levels": 4, "width": 200, "height": 200},
    }
    result = run(tmp_path, save(Image.fromarray(pattern()), "PNG"), params=params)
    sizes = {o.operation: (o.width, o.height) for o in result.outputs}
    assert sizes == {"thumbnail": (100, 67), "blur": (240, 160), "low-quality": (200, 133)}
    lq = np.asarray(Image.open(tmp_path / "processed" / "out_low-quality.webp"))
    assert len(np.unique(lq)) > 4  # lossy WebP blurs the levels a little, but
    assert np.abs(quadrant_means(lq)["tl"] - (255, 0, 0)).max() < 40  # 4 levels: 220 -> 255, 30 -> 0


@pytest.mark.parametrize(
    "params, field",
    [
        ({"thumbnail": {"width": 0}}, "params.thumbnail.width"),
        ({"thumbnail": {"width": "big"}}, "params.thumbnail.width"),
        ({"thumbnail": {"quality": 101}}, "params.thumbnail.quality"),
        ({"blur": {"sigma": -1}}, "params.blur.sigma"),
        ({"blur": {"levels": 4}}, "params.blur"),
        ({"low-quality": {"levels": 1}}, "params.low-quality.levels"),
        ({"low-quality": {"dither": 1}}, "params.low-quality.dither"),
        ({"sharpen": {}}, "params"),
        ({"thumbnail": 5}, "params.thumbnail"),
        ([1], "params"),
    ],
)
def test_bad_params_make_the_job_invalid(params, field):
    job = {"jobId": "x", "inputPath": "/in.jpg", "outputDir": "/out", "operations": ["thumbnail"], "params": params}
    with pytest.raises(JobError, match=field.replace(".", r"\.")) as e:
        parse_job(json.dumps(job))
    assert e.value.reason == "invalid-job" and not e.value.retry


def many_frames_gif(n: int) -> bytes:
    rng = np.random.default_rng(5)
    frames = [Image.fromarray((rng.integers(0, 4, (16, 16)) * 60).astype(np.uint8)).convert("P") for _ in range(n)]
    return save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=10, optimize=False)


EXTERNAL_SVG = b"""<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="100" height="100">
<image xlink:href="http://169.254.169.254/latest/meta-data" width="100" height="100"/></svg>"""
BOMB_SVG = b"""<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">]>
<svg xmlns="http://www.w3.org/2000/svg"><text>&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;</text></svg>"""


def hostile_inputs():
    jpeg = save(Image.fromarray(pattern()), "JPEG")
    png = save(Image.fromarray(pattern()), "PNG")
    return {
        "zero-bytes": (b"", "corrupt-image"),
        "truncated-jpeg": (jpeg[: len(jpeg) // 2], "corrupt-image"),
        "truncated-png": (png[: len(png) // 2], "corrupt-image"),
        "png-100000x100000": (png_header_only(100_000, 100_000), "too-large"),
        "gif-2500-frames": (many_frames_gif(2500), "too-large"),
        "random-bytes": (
            np.random.default_rng(9).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
            "unsupported-format",
        ),
        "svg-external-reference": (EXTERNAL_SVG, "unsupported-format"),
        "svg-entity-bomb": (BOMB_SVG, "too-large"),
    }


HOSTILE = hostile_inputs()


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_inputs_end_with_their_reason(tmp_path, kind):
    data, reason = HOSTILE[kind]
    with pytest.raises(JobError) as e:
        run(tmp_path, data, name="evil.jpg")
    assert e.value.reason == reason, str(e.value)
    assert e.value.retry == (reason == "corrupt-image")


def test_worker_survives_hostile_inputs_with_bounded_memory(r, redis_server, uploads):
    for kind, (data, _) in HOSTILE.items():
        (uploads / "user1" / f"{kind}.jpg").write_bytes(data)
    jobs = [
        {
            "jobId": kind,
            "inputPath": str(uploads / "user1" / f"{kind}.jpg"),
            "outputDir": str(uploads / "user1" / "processed"),
            "operations": ALL_OPS,
        }
        for kind in HOSTILE
    ]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with running_worker(redis_server.url, workers=2, max_retries=0):
        push(r, *jobs)
        wait_for(lambda: r.llen("image:failed") == len(jobs), what="every hostile job failed")
        (uploads / "user1" / "fine.jpg").write_bytes(save(Image.fromarray(pattern()), "JPEG"))
        push(
            r,
            json.dumps(
                {
                    "jobId": "fine",
                    "inputPath": str(uploads / "user1" / "fine.jpg"),
                    "outputDir": str(uploads / "user1" / "processed"),
                    "operations": ["thumbnail"],
                }
            ),
        )
        wait_for(lambda: r.llen("image:done") == 1, what="a good job after the bad ones")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 300, grown_mb
    reasons = {rec["jobId"]: rec["reason"] for rec in records(r, "image:failed")}
    assert reasons == {kind: reason for kind, (_, reason) in HOSTILE.items()}


def test_100_megapixel_jpeg_completes(tmp_path):
    big = Image.fromarray(pattern(1000, 1000)).resize((12000, 8400), Image.NEAREST)
    result = run(tmp_path, save(big, "JPEG", quality=80))
    assert {(o.operation, o.width, o.height) for o in result.outputs} == {
        ("thumbnail", 320, 224),
        ("blur", 640, 448),
        ("low-quality", 1280, 896),
    }
