"""The page of `gpu-image-worker serve` in a real browser (serve_browser.py):
a photo followed live to its three outputs, and a text file refused."""

from __future__ import annotations

from pathlib import Path

from conftest import DATA
from PIL import Image, ImageOps
from serve_browser import (  # noqa: F401 (fixtures)
    browser_fixture,
    card_of,
    evidence,
    open_as,
    page_fixture,
    serve_fixture,
    wait_done,
)

PHOTO = DATA / "rocket.jpg"
FITS = {"thumbnail": 320, "blur": 640, "low-quality": 1280}  # output spec v1: fit inside, never upscaled


def expected_size(path: Path, box: int) -> tuple:
    with Image.open(path) as im:
        w, h = ImageOps.exif_transpose(im).size
    scale = min(1.0, box / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def test_upload_page_shows_the_outputs_live_and_refuses_text(page, serve, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not an image\n")
    with evidence(page, serve, "outputs"):
        open_as(page, serve.url, "browser-user")
        page.wait_for_function("() => document.querySelector('#q-liveWorkers').textContent === '1'", timeout=15_000)
        page.set_input_files("#files", [str(PHOTO)])
        wait_done(page, PHOTO.name)
        card = card_of(page, PHOTO.name)
        assert card.get_attribute("data-state") == "done"
        sizes = card.locator("img.output").evaluate_all(
            "imgs => imgs.map(i => [i.dataset.op, i.naturalWidth, i.naturalHeight, +i.dataset.width,"
            " +i.dataset.height])"
        )
        assert sorted(op for op, *_ in sizes) == sorted(FITS)
        for op, nw, nh, w, h in sizes:
            assert (nw, nh) == (w, h) == expected_size(PHOTO, FITS[op]), (op, nw, nh, w, h)
        assert "640×427" in card.locator("figure.original figcaption").text_content()
        captions = card.locator("figure.output figcaption").all_text_contents()
        assert any(c.startswith("thumbnail 320×214") for c in captions), captions

        page.set_input_files("#files", [str(notes)])
        refused = card_of(page, "notes.txt")
        refused.locator(".detail", has_text="not an image").wait_for(timeout=15_000)
        assert refused.get_attribute("data-state") == "refused"
        assert "HTTP 415" in refused.locator(".detail").text_content()
