"""Attacks on the upload server's HTTP API, in this process against the
suite's redis-server: requests naming another host (DNS rebinding), writes
from other sites' pages, hostile file names, and a Redis or a disk that
refuses to write."""

from __future__ import annotations

import json
import shutil
import socket
import time

import pytest
from conftest import DATA
from redis_server import RedisServer, free_port
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


# -- names, Redis and disk that refuse -------------------------------------------


@pytest.mark.parametrize("name", ["photo.", "..", ".", "a..", "photo.jpg.", " .jpg"])
def test_the_job_id_answered_is_the_one_queued(make_client, r, name):
    client = make_client()
    res = client.post("/upload", data={"userId": "u1"}, files=[photo(name)])
    assert res.status_code == 201, res.text
    (info,) = res.json()["files"]
    (queued,) = [json.loads(x) for x in r.lrange("image:jobs", 0, -1)]
    assert info["jobId"] == queued["jobId"], (name, info, queued)
    assert client.get(f"/jobs/{info['jobId']}").json()["state"] == "queued"
    assert info["outputs"]["blur"].endswith(f"/{info['jobId']}_blur.webp".replace(" ", "%20"))


def test_a_300_character_name_is_stored_under_a_shorter_one(make_client, r, tmp_path):
    client = make_client()
    name = "n" * 296 + ".jpg"
    res = client.post("/upload", data={"userId": "u1"}, files=[photo(name)])
    assert res.status_code == 201, res.text
    (info,) = res.json()["files"]
    assert info["storedAs"].endswith(".jpg") and len(info["storedAs"]) <= 160
    assert info["name"] == name and len(info["jobId"].encode()) <= 200
    assert client.get(f"/jobs/{info['jobId']}").json()["state"] == "queued"


def _refusing(refusal: str) -> RedisServer:
    """A Redis that refuses writes: MISCONF once a snapshot failed (its
    directory gone, as when the disk is full), or OOM (no memory left)."""
    if refusal == "memory":
        return RedisServer(["--maxmemory", "1", "--maxmemory-policy", "noeviction"])
    server = RedisServer(["--save", "3600 1", "--stop-writes-on-bgsave-error", "yes"])
    conn = server.client()
    shutil.rmtree(server.dir)
    conn.bgsave()
    deadline = time.monotonic() + 10
    while conn.info("persistence")["rdb_last_bgsave_status"] != "err":
        assert time.monotonic() < deadline, "the snapshot did not fail"
        time.sleep(0.05)
    return server


@pytest.mark.parametrize(
    "refusal, code, said",
    [("disk", "redis-cannot-write", "cannot write to its disk"), ("memory", "redis-out-of-memory", "out of memory")],
)
def test_a_redis_refusing_writes_is_reported_as_such(make_client, tmp_path, refusal, code, said):
    server = _refusing(refusal)
    try:
        client = make_client(redis_url=server.url)
        # A name with the other refusal's word: the server's words decide, not the command's.
        res = client.post("/upload", data={"userId": "u1"}, files=[photo("OOM MISCONF.jpg")])
        assert res.status_code == 201, res.text
        body = res.json()
        assert body["queued"] is False and body["queueError"] == code, body
        assert said in body["warning"] and "not reachable" not in body["warning"]
        assert len(stored_files(tmp_path)) == 1
    finally:
        server.proc.kill()  # it would not stop on SIGTERM without its snapshot
        server.close()


def test_an_unwritable_uploads_directory_is_a_clear_error(make_client, tmp_path, caplog):
    client = make_client()
    (tmp_path / "uploads" / "u1").write_bytes(b"")  # where the user's directory would be
    with caplog.at_level("ERROR", logger="fastimg.serve"):
        res = client.post("/upload", data={"userId": "u1"}, files=[photo()])
    body = assert_json_error(res, 500, "storage-error")
    assert "could not be stored" in body["message"] and "nothing was stored" in body["message"]
    assert "Traceback" not in caplog.text and "Cannot store an upload" in caplog.text


def test_healthz_tells_whether_redis_answers(make_client):
    assert make_client().get("/healthz").json() == {"ok": True, "redis": True}
    down = make_client(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    body = down.get("/healthz")
    assert body.status_code == 503 and body.json()["ok"] is False and body.json()["redis"] is False
