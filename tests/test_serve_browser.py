"""The page of `gpu-image-worker serve` in a real browser: Debian's chromium,
driven by Playwright (no browser download: the system binary is launched).

In CI (CI=true) a missing chromium or playwright fails the test; elsewhere it
skips with the reason. .ci/run installs chromium."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import DATA
from PIL import Image, ImageOps
from test_serve_process import ServeProcess

CHROMIUM = os.environ.get("FASTIMG_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHOTO = DATA / "rocket.jpg"
FITS = {"thumbnail": 320, "blur": 640, "low-quality": 1280}  # output spec v1: fit inside, never upscaled
ARTEFACTS = Path(
    os.environ.get("FASTIMG_ARTEFACTS") or Path(__file__).resolve().parent.parent / "build" / "test-artefacts"
)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: the browser test must run; .ci/run installs chromium)")
    pytest.skip(reason)


def expected_size(path: Path, box: int) -> tuple:
    with Image.open(path) as im:
        w, h = ImageOps.exif_transpose(im).size
    scale = min(1.0, box / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


@pytest.fixture
def page(tmp_path):
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"{CHROMIUM} not found: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed: pip install '.[test]'")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_upload_page_shows_the_outputs_live_and_refuses_text(page, tmp_path, request):
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not an image\n")
    with ServeProcess(
        ["--embedded", "--redis-port", "0", "-workers", "1", "--data-dir", str(tmp_path / "data")]
    ) as serve:
        try:
            page.goto(serve.url + "/")
            # The event stream is live and its first stats have come.
            page.wait_for_function("() => document.querySelector('#q-liveWorkers').textContent === '1'", timeout=15_000)
            assert "ok" in page.get_attribute("#conn", "class")
            page.fill("#user", "browser-user")
            page.dispatch_event("#user", "change")
            page.set_input_files("#files", [str(PHOTO)])
            card = page.locator("article.file", has_text=PHOTO.name)
            card.locator("img.output").nth(2).wait_for(timeout=60_000)
            assert card.get_attribute("data-state") == "done"
            page.wait_for_function(
                "() => [...document.querySelectorAll('article.file img.output')]"
                ".every(i => i.complete && i.naturalWidth > 0)",
                timeout=30_000,
            )
            sizes = card.locator("img.output").evaluate_all(
                "imgs => imgs.map(i => [i.dataset.op, i.naturalWidth, i.naturalHeight,"
                " +i.dataset.width, +i.dataset.height])"
            )
            assert sorted(op for op, *_ in sizes) == sorted(FITS)
            for op, nw, nh, w, h in sizes:
                assert (nw, nh) == (w, h) == expected_size(PHOTO, FITS[op]), (op, nw, nh, w, h)
            original = card.locator("figure.original figcaption").text_content()
            assert "640×427" in original, original
            captions = card.locator("figure.output figcaption").all_text_contents()
            assert any(c.startswith("thumbnail 320×214") for c in captions), captions
            page.wait_for_function("() => document.querySelector('#q-done').textContent === '1'", timeout=15_000)

            page.set_input_files("#files", [str(notes)])
            refused = page.locator("article.file", has_text="notes.txt")
            refused.locator(".detail", has_text="not an image").wait_for(timeout=15_000)
            assert refused.get_attribute("data-state") == "refused"
            assert "HTTP 415" in refused.locator(".detail").text_content()
        except Exception as e:
            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTEFACTS / f"{request.node.name}-{int(time.time())}.png"
            page.screenshot(path=str(shot), full_page=True)
            (shot.with_suffix(".log")).write_text(serve.output())
            raise AssertionError(f"{e}\nscreenshot: {shot}\nserver log: {shot.with_suffix('.log')}") from e
