"""What the page tests of `gpu-image-worker serve` share: Debian's chromium
driven by Playwright (the system binary, nothing downloaded), a serve process
with its embedded Redis, evidence on failure, and axe-core from npm.

In CI (CI=true) a missing chromium, playwright or npm fails the tests;
elsewhere they skip with the reason. .ci/run installs chromium and axe-core."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_serve_process import ServeProcess

CHROMIUM = os.environ.get("FASTIMG_CHROMIUM", "/usr/bin/chromium")
REBIND = "rebind.test"  # resolves to 127.0.0.1 in the test browser: a DNS-rebinding name
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    f"--host-resolver-rules=MAP {REBIND} 127.0.0.1",
]
ROOT = Path(__file__).resolve().parent.parent
ARTEFACTS = Path(os.environ.get("FASTIMG_ARTEFACTS") or ROOT / "build" / "test-artefacts")
AXE_DIR = Path(__file__).resolve().parent / "browser"
AXE = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: the browser tests must run; .ci/run installs what they need)")
    pytest.skip(reason)


@pytest.fixture(scope="module", name="browser")
def browser_fixture():
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        unavailable(f"{CHROMIUM} not found: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed: pip install '.[test]'")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module", name="serve")
def serve_fixture(tmp_path_factory):
    """One serve for the module's tests (each test uses a user id of its own)."""
    data = tmp_path_factory.mktemp("serve")
    with ServeProcess(["--embedded", "--redis-port", "0", "-workers", "1", "--data-dir", str(data)]) as process:
        process.data_dir = data
        yield process


@pytest.fixture(name="page")
def page_fixture(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    opened.problems = []  # console errors and failed requests: a page in order has none
    opened.on("console", lambda m: m.type == "error" and opened.problems.append(m.text))
    opened.on("pageerror", lambda e: opened.problems.append(str(e)))
    # Playwright turns on catching file choosers when the first listener comes;
    # one added by expect_file_chooser can come too late for the key press.
    opened.on("filechooser", lambda _chooser: None)
    try:
        yield opened
    finally:
        context.close()


@contextlib.contextmanager
def evidence(page, serve: ServeProcess, name: str) -> Iterator[None]:
    """On failure: a screenshot and the server's log under ARTEFACTS, named in the error."""
    try:
        yield
    except Exception as e:
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTEFACTS / f"{name}-{int(time.time())}.png"
        with contextlib.suppress(Exception):
            page.screenshot(path=str(shot), full_page=True)
        shot.with_suffix(".log").write_text(serve.output())
        raise AssertionError(f"{e}\nscreenshot: {shot}\nserver log: {shot.with_suffix('.log')}") from e


def open_as(page, url: str, user: str) -> None:
    page.goto(url + "/")
    page.wait_for_function("() => document.querySelector('#conn').textContent === 'live'", timeout=15_000)
    page.fill("#user", user)
    page.dispatch_event("#user", "change")


def card_of(page, name: str):
    return page.locator("article.file", has_text=name)


def wait_done(page, name: str) -> None:
    card_of(page, name).locator("img.output").nth(2).wait_for(timeout=60_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('article.file img.output')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=30_000,
    )


def photo_done(page, url: str, user: str, photo: Path) -> str:
    """Open the page as ``user``, upload ``photo``, wait for its outputs; its job id."""
    open_as(page, url, user)
    page.set_input_files("#files", [str(photo)])
    wait_done(page, photo.name)
    return card_of(page, photo.name).get_attribute("data-job-id")


def axe_source() -> str:
    """axe-core's script (tests/browser/package.json), installed with npm ci when missing."""
    if not AXE.exists():
        if shutil.which("npm") is None:
            unavailable("npm is needed for axe-core (apt-get install npm)")
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=AXE_DIR, check=True, timeout=300
        )
    return AXE.read_text()


def serious_violations(page) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now. It
    is evaluated through the DevTools protocol, which the page's
    Content-Security-Policy does not govern (an injected <script> would be
    refused, as it should)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source())
    found = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
            .filter(v => v.impact === 'serious' || v.impact === 'critical')
            .map(v => `${v.impact} ${v.id}: ${v.help} at ${v.nodes.map(n => n.target.join(' ')).join(', ')}`)"""
    )
    return list(found)
