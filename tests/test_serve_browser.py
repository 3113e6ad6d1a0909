"""The page of `gpu-image-worker serve` in a real browser (serve_browser.py):
uploads followed live to three outputs and their downloads, the uploads
shown again after a reload, keyboard use and axe-core, drops anywhere, the
limits, a phone's screen, and the screenshots in docs/serve.md."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time
import zipfile
from pathlib import Path

import httpx
import redis
from conftest import DATA
from PIL import Image, ImageOps
from redis_server import env_without_redis
from serve_browser import (  # noqa: F401 (fixtures)
    ARTEFACTS,
    browser_fixture,
    card_of,
    evidence,
    open_as,
    page_fixture,
    photo_done,
    serious_violations,
    serve_fixture,
    wait_done,
)
from test_serve_process import ServeProcess

PHOTO = DATA / "rocket.jpg"
FITS = {"thumbnail": 320, "blur": 640, "low-quality": 1280}  # output spec v1: fit inside, never upscaled
DONE = "(sel) => document.querySelector(sel)?.dataset.state === 'done'"


def expected_size(path: Path, box: int) -> tuple:
    with Image.open(path) as im:
        w, h = ImageOps.exif_transpose(im).size
    scale = min(1.0, box / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def test_a_photo_goes_live_to_three_outputs_with_downloads_and_text_is_refused(page, serve, tmp_path):
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
        assert "rocket.jpg: done" in page.text_content("#announce")

        links = card.locator("figure.output a[download]")
        assert links.count() == 3
        for i in range(3):
            href, name = links.nth(i).get_attribute("href"), links.nth(i).get_attribute("download")
            got = httpx.get(serve.url + href)
            assert got.status_code == 200 and got.content[:4] == b"RIFF" and name.startswith("rocket_"), (href, name)
        with page.expect_download() as download:
            card.locator(".downloads a").click()
        assert download.value.suggested_filename == "rocket.zip"
        with zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes())) as archive:
            assert sorted(archive.namelist()) == sorted(f"{card.get_attribute('data-job-id')}_{op}.webp" for op in FITS)

        page.set_input_files("#files", [str(notes)])
        refused = card_of(page, "notes.txt")
        refused.locator(".detail", has_text="not an image").wait_for(timeout=15_000)
        assert refused.get_attribute("data-state") == "refused"
        assert "HTTP 415" in refused.locator(".detail").text_content()
        assert all("status of 415" in p for p in page.problems), page.problems  # nothing else went wrong


def test_a_reload_shows_the_users_uploads_again_page_by_page(page, serve):
    with evidence(page, serve, "reload"):
        job_id = photo_done(page, serve.url, "reloader", PHOTO)
        for i in range(3):
            httpx.post(
                serve.url + "/upload", data={"userId": "reloader"}, files={"file": (f"more{i}.jpg", PHOTO.read_bytes())}
            )
        page.reload()
        page.wait_for_function("() => document.querySelectorAll('article.file').length === 4", timeout=15_000)
        restored = page.locator(f"article.file[data-job-id='{job_id}']")
        restored.locator("img.output").nth(2).wait_for(timeout=15_000)
        assert restored.get_attribute("data-state") == "done"
        assert restored.locator(".downloads a").get_attribute("href").endswith(".zip")
        first = httpx.get(serve.url + "/uploads", params={"user": "reloader", "limit": 3}).json()
        assert len(first["uploads"]) == 3 and first["next"]
        params = {"user": "reloader", "limit": 3, "before": first["next"]}
        rest = httpx.get(serve.url + "/uploads", params=params).json()
        assert [u["jobId"] for u in rest["uploads"]] == [job_id] and rest["next"] is None


def test_everything_works_from_the_keyboard_and_axe_finds_nothing_serious(page, serve, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    with evidence(page, serve, "keyboard"):
        open_as(page, serve.url, "keyboard-user")
        page.focus("#user")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "drop"
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline not in ("none", ""), "focus is not visible"
        for key in ("Enter", " "):
            with page.expect_file_chooser() as chooser:
                page.keyboard.press(key)
            chooser.value.set_files(str(PHOTO) if key == "Enter" else str(notes))
        wait_done(page, PHOTO.name)
        card_of(page, "notes.txt").locator(".detail", has_text="not an image").wait_for(timeout=15_000)
        # From the drop zone, Tab reaches each download link, in order.
        page.focus("#drop")
        reached = []
        for _ in range(4):
            page.keyboard.press("Tab")
            reached.append(page.evaluate("document.activeElement.getAttribute('aria-label')"))
        assert reached == [f"Download the {op} of rocket.jpg" for op in FITS] + [
            "Download all three outputs of rocket.jpg (ZIP)"
        ], reached
        assert serious_violations(page) == []


def test_a_drop_anywhere_uploads_and_never_leaves_the_page(page, serve):
    with evidence(page, serve, "drop"):
        open_as(page, serve.url, "dropper")
        url = page.url
        kept = page.evaluate(
            """(b64) => {
                const photo = new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], 'dropped.jpg');
                const data = new DataTransfer();
                data.items.add(photo);
                const at = document.querySelector('header');
                const fire = (type) => at.dispatchEvent(
                    new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
                return [fire('dragenter'), fire('dragover'), fire('drop')];
            }""",
            base64.b64encode(PHOTO.read_bytes()).decode(),
        )
        # dragover and drop cancelled: the browser's own action (open the file) does not happen.
        assert kept[1:] == [False, False], kept
        page.wait_for_function(DONE, arg="article.file", timeout=60_000)
        assert page.url == url and card_of(page, "dropped.jpg").count() == 1


def test_limits_are_readable_and_enforced_by_the_page(browser, tmp_path):
    args = ["--embedded", "--redis-port", "0", "-workers", "0", "--data-dir", str(tmp_path / "d")]
    with ServeProcess(args + ["--max-files", "3", "--max-upload-bytes", "100000"]) as small:
        context = browser.new_context()
        page = context.new_page()
        try:
            with evidence(page, small, "limits"):
                open_as(page, small.url, "limited")
                assert page.text_content("#limits") == (
                    "Up to 3 files at a time, 97.7 KiB each: JPEG, PNG, GIF, WebP, BMP, TIFF, SVG."
                )
                copies = []
                for i in range(4):
                    copies.append(tmp_path / f"c{i}.png")
                    Image.new("RGB", (8, 8)).save(copies[-1])
                page.set_input_files("#files", [str(p) for p in copies])
                assert "4 files chosen: up to 3 at a time" in page.text_content("#notice")
                assert page.locator("article.file").count() == 0
                assert not any((tmp_path / "d" / "uploads").rglob("*.png"))
                page.set_input_files("#files", [str(PHOTO)])  # 110 KiB
                detail = card_of(page, PHOTO.name).locator(".detail").text_content()
                assert detail == "109.9 KiB: over the limit of 97.7 KiB per upload", detail
                res = httpx.post(small.url + "/upload", data={"userId": "x"}, files={"file": ("a.jpg", b"x" * 200_000)})
                message = res.json()["message"]
                assert res.status_code == 413 and message.endswith(" KiB, over the limit of 97.7 KiB"), message
        finally:
            context.close()


def test_on_a_phone_the_results_are_above_the_fold_and_screenshots(browser, serve):
    """Also takes the screenshots of docs/serve.md: FASTIMG_SCREENSHOTS=docs/images writes them there."""
    shots = Path(os.environ.get("FASTIMG_SCREENSHOTS") or ARTEFACTS)
    shots.mkdir(parents=True, exist_ok=True)
    for name, options in (
        ("phone", {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}),
        ("desktop", {"viewport": {"width": 1280, "height": 800}}),
    ):
        context = browser.new_context(device_scale_factor=1, **options)
        page = context.new_page()
        try:
            with evidence(page, serve, name):
                open_as(page, serve.url, f"{name}-user")
                page.set_input_files("#files", [str(PHOTO)])
                wait_done(page, PHOTO.name)
                box = card_of(page, PHOTO.name).bounding_box()
                first_output = card_of(page, PHOTO.name).locator("img.output").first.bounding_box()
                fold = options["viewport"]["height"]
                assert box["y"] < fold / 2 and first_output["y"] + first_output["height"] < fold, (box, first_output)
                time.sleep(1.1)  # the server's queue figures are at most a second old
                done = httpx.get(serve.url + "/stats").json()["done"]
                page.wait_for_function(  # the queue panel caught up
                    "(n) => +document.getElementById('q-done').textContent >= n"
                    " && document.getElementById('q-inFlight').textContent === '0'",
                    arg=done,
                )
                page.evaluate("document.activeElement.blur()")
                page.screenshot(path=str(shots / f"serve-{name}.png"))
        finally:
            context.close()


def test_a_retry_counts_down_to_its_next_attempt(page, serve):
    with evidence(page, serve, "retry"):
        job_id = photo_done(page, serve.url, "retry-user", PHOTO)
        now = int(time.time() * 1000)
        event = {"jobId": job_id, "state": "retrying", "at": now + 1, "reason": "io-error", "error": "disk busy"}
        event["nextAttemptAt"] = now + 8000
        redis.Redis(port=serve.embedded_port()).publish("image:events", json.dumps(event))
        detail = card_of(page, PHOTO.name).locator(".detail")
        detail.filter(has_text="next attempt in").wait_for(timeout=15_000)
        seconds = [int(re.search(r"next attempt in (\d+)s", detail.text_content()).group(1))]
        page.wait_for_timeout(3200)  # the page updates it every second
        seconds.append(int(re.search(r"next attempt in (\d+)s", detail.text_content()).group(1)))
        assert detail.text_content().startswith("io-error: disk busy")
        assert seconds[0] >= 6 and seconds[1] <= seconds[0] - 2, seconds


def test_token_mode_says_what_is_needed(browser, tmp_path):
    args = ["--embedded", "--redis-port", "0", "-workers", "1", "--data-dir", str(tmp_path)]
    env = env_without_redis() | {"FASTIMG_SERVE_TOKEN": "s3cret"}
    with ServeProcess(args, env=env) as guarded:
        context = browser.new_context()
        page = context.new_page()
        try:
            with evidence(page, guarded, "token"):
                page.goto(guarded.url + "/")
                page.wait_for_function("() => document.querySelector('#conn').textContent === 'token needed'")
                assert "enter it above" in page.text_content("#q-note")
                assert page.is_visible("#token") and page.is_visible("label[for=token]")
                assert serious_violations(page) == []
                page.set_input_files("#files", [str(PHOTO)])
                assert "Enter the access token first" in page.text_content("#notice")
                assert page.locator("article.file").count() == 0
                page.fill("#token", "wrong")
                page.dispatch_event("#token", "change")
                page.wait_for_function("() => document.querySelector('#conn').textContent === 'token refused'")
                assert "refused this access token" in page.text_content("#q-note")
                page.fill("#token", "s3cret")
                page.dispatch_event("#token", "change")
                page.wait_for_function("() => document.querySelector('#conn').textContent === 'live'")
                page.set_input_files("#files", [str(PHOTO)])
                wait_done(page, PHOTO.name)
        finally:
            context.close()
