"""Attacks on the upload server's HTTP API, in this process against the
suite's redis-server: requests naming another host (DNS rebinding) and
writes from other sites' pages; and what /healthz says."""

from __future__ import annotations

import socket

import pytest
from conftest import DATA
from redis_server import free_port
from test_serve_api import assert_json_error, make_client_fixture, photo, stored_files  # noqa: F401

PHOTO = DATA / "rocket.jpg"


# -- DNS rebinding: a name that is not this server's --------------------------


@pytest.mark.parametrize("path", ["/", "/events", "/stats", "/jobs/x", "/files/u1/processed/a_blur.webp", "/config"])
def test_a_foreign_host_name_is_refused(make_client, path):
    client = make_client()
    res = client.get(path, headers={"Host": "rebind.attacker.example:8000"})
    body = assert_json_error(res, 421, "unknown-host")
    assert "--allowed-host rebind.attacker.example" in body["message"]


def test_the_names_of_this_server_are_answered(make_client):
    client = make_client()
    for host in ["127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000", "10.1.2.3:8000", "localhost."]:
        assert client.get("/config", headers={"Host": host}).status_code == 200, host
    extra = make_client(allowed_hosts=("photos.example.org",))
    assert extra.get("/config", headers={"Host": "photos.example.org"}).status_code == 200
    assert extra.get("/config", headers={"Host": "evil.example.org"}).status_code == 421
    anything = make_client(allowed_hosts=("*",))
    assert anything.get("/config", headers={"Host": "evil.example.org"}).status_code == 200


def test_allowed_names_follow_the_listening_address():
    from fastimg.serve.guard import allowed_hosts

    assert allowed_hosts("127.0.0.1") == {"localhost", "127.0.0.1"}
    assert "myhost.lan" in allowed_hosts("myhost.lan")
    everywhere = allowed_hosts("0.0.0.0", ["Photos.Example.org:443"])
    assert socket.gethostname().lower() in everywhere and "photos.example.org" in everywhere


# -- writes from other sites' pages --------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        # fetch("http://127.0.0.1:8000/upload", {method: "POST", mode: "no-cors", body}) from another site
        {"Origin": "https://attacker.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
        # another local port is another origin (same-site)
        {"Origin": "http://127.0.0.1:3000", "Sec-Fetch-Site": "same-site"},
        {"Origin": "null"},  # a sandboxed frame or a file:// page
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
def test_an_upload_from_another_origin_is_refused_and_stores_nothing(make_client, r, tmp_path, headers):
    client = make_client()
    res = client.post("/upload", data={"userId": "u1"}, files=[photo()], headers=headers)
    assert_json_error(res, 403, "cross-origin")
    assert stored_files(tmp_path) == [] and r.llen("image:jobs") == 0


def test_the_page_itself_curl_and_cors_origins_may_upload(make_client, r):
    client = make_client(cors_origins=("https://app.example",))
    for headers in [
        {"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"},  # the page
        {},  # curl
        {"Origin": "https://app.example", "Sec-Fetch-Site": "cross-site"},  # named by --cors-origin
    ]:
        res = client.post("/upload", data={"userId": "u1"}, files=[photo()], headers=headers)
        assert res.status_code == 201, (headers, res.text)
    assert r.llen("image:jobs") == 3


def test_every_answer_keeps_the_page_to_its_own_scripts(make_client):
    client = make_client()
    for res in [client.get("/"), client.get("/static/app.js"), client.get("/nowhere"), client.get("/config")]:
        csp = res.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp and res.headers["x-content-type-options"] == "nosniff"
        assert res.headers["referrer-policy"] == "no-referrer"


def test_healthz_tells_whether_redis_answers(make_client):
    assert make_client().get("/healthz").json() == {"ok": True, "redis": True}
    down = make_client(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    body = down.get("/healthz")
    assert body.status_code == 503 and body.json()["ok"] is False and body.json()["redis"] is False
