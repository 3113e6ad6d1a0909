"""Attacks on the page of `gpu-image-worker serve`, in a real browser
(serve_browser.py): markup in events published on the queue, a page from
another origin posting an upload, and a DNS-rebinding name reading the API."""

from __future__ import annotations

import http.server
import json
import threading
import time

import redis
from conftest import DATA
from serve_browser import (  # noqa: F401 (fixtures)
    REBIND,
    browser_fixture,
    card_of,
    evidence,
    page_fixture,
    photo_done,
    serve_fixture,
)

PHOTO = DATA / "rocket.jpg"
MARKUP = "<img src=x onerror=\"window.pwned='{}'\">"


def test_markup_in_queue_events_is_shown_as_text_and_runs_nothing(page, serve):
    """Anyone who can reach the Redis can publish on image:events (on the
    embedded server, any local user): what they publish must stay text."""
    with evidence(page, serve, "xss"):
        job_id = photo_done(page, serve.url, "victim", PHOTO)
        later = int(time.time() * 1000) + 60_000
        forged = {
            "jobId": job_id,
            "state": "done",
            "at": later,
            "attempts": MARKUP.format("attempts"),
            "outputs": [
                {"operation": MARKUP.format("operation"), "width": 1, "height": 1, "bytes": 1},
                {"operation": "thumbnail", "width": MARKUP.format("width"), "height": 2, "bytes": 3},
            ],
        }
        redis.Redis(port=serve.embedded_port()).publish("image:events", json.dumps(forged))
        page.wait_for_function("() => document.querySelector('article.file .detail').textContent.includes('pwned')")
        page.wait_for_timeout(500)  # time for an onerror that would run
        assert page.evaluate("window.pwned") is None
        assert card_of(page, PHOTO.name).locator("figure.output").count() == 1  # the unknown operation is left out
        card = card_of(page, PHOTO.name)
        assert card.locator("figcaption img, figcaption script").count() == 0
        caption = card.locator("figure.output figcaption").text_content()
        assert MARKUP.format("width") in caption, caption
        assert MARKUP.format("attempts") in card.locator(".detail").text_content()
        csp = page.evaluate("async () => (await fetch('/')).headers.get('content-security-policy')")
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp


class _AttackerSite(http.server.BaseHTTPRequestHandler):
    """Another origin's page: posts an image to serve without CORS, as any
    site a user of the machine visits could."""

    target = ""

    def do_GET(self) -> None:
        body = f"""<!doctype html><script>
            const png = Uint8Array.from(atob("{_PNG}"), (c) => c.charCodeAt(0));
            const form = new FormData();
            form.append("userId", "csrf-victim");
            form.append("file", new Blob([png], {{type: "image/png"}}), "planted.png");
            fetch("{self.target}/upload", {{method: "POST", mode: "no-cors", body: form}})
              .then(() => document.title = "sent", () => document.title = "sent");
        </script>""".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="  # 1x1 PNG


def test_a_page_from_another_origin_cannot_upload(page, serve):
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("Site", (_AttackerSite,), {"target": serve.url}))
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        with evidence(page, serve, "cross-origin"):
            page.goto(f"http://127.0.0.1:{site.server_address[1]}/")
            page.wait_for_function("() => document.title === 'sent'", timeout=15_000)
            page.wait_for_timeout(500)
            victim = serve.data_dir / "uploads" / "csrf-victim"
            assert not victim.exists() or not any(victim.iterdir()), list(victim.iterdir())
            assert "for user csrf-victim" not in serve.output()
    finally:
        site.shutdown()


def test_a_rebinding_name_reads_nothing(page, serve):
    """rebind.test resolves to 127.0.0.1 in the test browser, as an
    attacker's name would after its DNS answer changes."""
    port = serve.url.rsplit(":", 1)[1]
    with evidence(page, serve, "rebinding"):
        for path in ("/", "/stats", "/events", "/uploads?user=victim"):
            res = page.goto(f"http://{REBIND}:{port}{path}")
            assert res.status == 421, (path, res.status)
            assert "unknown-host" in page.content()
