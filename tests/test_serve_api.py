"""The upload server's HTTP API (fastimg.serve.app) in this process, against the
suite's real redis-server."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from conftest import DATA, running_worker
from redis_server import free_port, wait_for
from starlette.testclient import TestClient

from fastimg.producer import store_upload
from fastimg.serve.access import valid_user_id
from fastimg.serve.app import create_app
from fastimg.serve.limits import BodyLimits
from fastimg.serve.state import Settings

PHOTO = DATA / "rocket.jpg"


@pytest.fixture(name="make_client")
def make_client_fixture(redis_server, r, tmp_path):
    """The app over ``Settings(uploads_root=tmp_path / "uploads", **kw)``, its lifespan
    (the Redis clients) running; requests name the host 127.0.0.1:8000."""
    made = []

    def make(**kw) -> TestClient:
        kw.setdefault("redis_url", redis_server.url)
        settings = Settings(uploads_root=tmp_path / "uploads", **kw)
        client = TestClient(create_app(settings), base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
        client.__enter__()  # runs the lifespan: Redis clients
        made.append(client)
        return client

    yield make
    for client in made:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


def stored_files(tmp_path: Path) -> list:
    root = tmp_path / "uploads"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


def photo(name: str = "rocket.jpg") -> tuple:
    return ("file", (name, PHOTO.read_bytes(), "image/jpeg"))


def assert_json_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["error"] == code, body
    assert body["message"]
    return body


def test_upload_stores_and_queues_the_seed_job(client, r, tmp_path):
    res = client.post("/upload", data={"userId": "u42"}, files=[photo("my rocket.jpg")])
    assert res.status_code == 201, res.text
    body = res.json()
    assert body["queued"] is True and body["userId"] == "u42"
    (info,) = body["files"]
    root = (tmp_path / "uploads").resolve()
    stored = root / "u42" / info["storedAs"]
    assert stored.read_bytes() == PHOTO.read_bytes()
    assert info["storedAs"].endswith("-my rocket.jpg") and info["jobId"] == stored.stem
    assert info["type"] == "jpeg" and info["bytes"] == PHOTO.stat().st_size
    (raw,) = r.lrange("image:jobs", 0, -1)
    job = json.loads(raw)
    assert job["jobId"] == info["jobId"]
    assert job["inputPath"] == str(stored)
    assert job["outputDir"] == str(root / "u42" / "processed")
    assert job["operations"] == ["thumbnail", "blur", "low-quality"] and job["retryCount"] == 0
    assert r.hget(f"image:status:{info['jobId']}", "state") == b"queued"
    assert info["outputs"]["blur"] == f"/files/u42/processed/{info['jobId']}_blur.webp".replace(" ", "%20")


def test_several_files_in_one_upload_and_user_id_in_the_header(client, r, tmp_path):
    res = client.post(
        "/upload",
        headers={"X-User-Id": "alice"},
        files=[photo("a.jpg"), ("file", ("b.png", (DATA / "chelsea.png").read_bytes(), "image/png"))],
    )
    assert res.status_code == 201, res.text
    assert [f["type"] for f in res.json()["files"]] == ["jpeg", "png"]
    assert r.llen("image:jobs") == 2
    assert len(stored_files(tmp_path)) == 2


def test_a_non_image_refuses_the_whole_upload_and_stores_nothing(client, r, tmp_path):
    res = client.post(
        "/upload", data={"userId": "u1"}, files=[photo(), ("file", ("notes.txt", b"hello, not an image", "image/jpeg"))]
    )
    body = assert_json_error(res, 415, "not-an-image")
    assert body["refused"] == ["notes.txt"] and "nothing was stored" in body["message"]
    assert stored_files(tmp_path) == []
    assert r.llen("image:jobs") == 0


@pytest.mark.parametrize("user", ["../x", "a/b", "..", ".", "x" * 65, "bad\x00id", " lead", "é"])
def test_unsafe_user_ids_are_refused_before_storing(client, r, tmp_path, user):
    res = client.post("/upload", data={"userId": user}, files=[photo()])
    assert_json_error(res, 400, "invalid-user-id")
    assert stored_files(tmp_path) == [] and r.llen("image:jobs") == 0


@pytest.mark.parametrize(
    "user", ["u1", "user.name", "a b", "A-Z_09", "..a", "x" * 64, "a/b", "..", "a\\b", "semi;colon", "tab\tbed", "é"]
)
def test_user_id_rule_agrees_with_store_upload(tmp_path, user):
    try:
        store_upload(b"x", tmp_path, user, "f.jpg")
        stored = True
    except ValueError:
        stored = False
    # serve may be stricter (a length bound, no outer spaces), never looser.
    assert not valid_user_id(user) or stored
    if stored and len(user) <= 64 and user == user.strip():
        assert valid_user_id(user)


def test_missing_or_conflicting_user_id(client, tmp_path):
    assert_json_error(client.post("/upload", files=[photo()]), 400, "user-id-required")
    res = client.post("/upload", data={"userId": "a"}, headers={"X-User-Id": "b"}, files=[photo()])
    assert_json_error(res, 400, "user-id-mismatch")
    assert stored_files(tmp_path) == []


def test_bad_requests_get_json_errors(client):
    assert_json_error(
        client.post("/upload", content=b"{}", headers={"content-type": "application/json"}), 415, "not-multipart"
    )
    assert_json_error(client.post("/upload", data={"userId": "u1"}, files=[]), 415, "not-multipart")
    assert_json_error(
        client.post("/upload", data={"userId": "u1"}, files={"x": ("", b"", "text/plain")}), 400, "no-files"
    )
    assert_json_error(
        client.post("/upload", data={"userId": "u1"}, files={"x": ("empty.jpg", b"", "image/jpeg")}),
        415,
        "not-an-image",
    )
    broken = b'--XX\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n\xff\xd8\xff'
    res = client.post(
        "/upload", content=broken, headers={"content-type": "multipart/form-data; boundary=XX", "x-user-id": "u1"}
    )
    assert res.status_code in (400, 415), res.text
    assert res.headers["content-type"].startswith("application/json")
    assert_json_error(client.get("/nowhere"), 404, "not-found")
    assert_json_error(client.get("/upload"), 405, "method-not-allowed")
    assert_json_error(client.get("/jobs/" + "x" * 201), 400, "invalid-job-id")
    assert_json_error(client.get("/jobs/nope"), 404, "unknown-job")


def test_too_many_files(make_client, tmp_path):
    client = make_client(max_files=2)
    res = client.post("/upload", data={"userId": "u1"}, files=[photo("a.jpg"), photo("b.jpg"), photo("c.jpg")])
    assert res.status_code == 400 and res.json()["error"] == "bad-request", res.text
    assert stored_files(tmp_path) == []


def test_body_over_the_limit_by_content_length(make_client, r, tmp_path):
    client = make_client(max_body_bytes=50_000)
    body = assert_json_error(client.post("/upload", data={"userId": "u1"}, files=[photo()]), 413, "too-large")
    assert body["limit"] == 50_000
    assert stored_files(tmp_path) == [] and r.llen("image:jobs") == 0


def test_streamed_body_over_the_limit_is_cut_off(make_client, r, tmp_path):
    client = make_client(max_body_bytes=50_000)
    sent = []

    def chunks():  # no Content-Length: the limit must hold while streaming
        head = (
            b'--XX\r\nContent-Disposition: form-data; name="userId"\r\n\r\nu1\r\n'
            b'--XX\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        )
        data = head + PHOTO.read_bytes() + b"\r\n--XX--\r\n"
        for i in range(0, len(data), 8192):
            sent.append(i)
            yield data[i : i + 8192]

    res = client.post("/upload", content=chunks(), headers={"content-type": "multipart/form-data; boundary=XX"})
    assert_json_error(res, 413, "too-large")
    assert stored_files(tmp_path) == [] and r.llen("image:jobs") == 0


def test_a_stalled_body_times_out():
    seen = {}

    async def app(scope, receive, send):
        try:
            while (await receive()).get("more_body"):
                pass
        except Exception as e:  # the 408 is raised inside the app, as from request.form()
            seen["error"] = e
            raise

    async def receive():
        if not seen.get("first"):
            seen["first"] = True
            return {"type": "http.request", "body": b"x" * 10, "more_body": True}
        await asyncio.sleep(5)  # the client stops sending
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message):
        pass

    limits = BodyLimits(app, max_bytes=1000, read_timeout=0.2, body_timeout=10)
    with pytest.raises(Exception) as info:
        asyncio.run(asyncio.wait_for(limits({"type": "http", "headers": []}, receive, send), 3))
    assert getattr(info.value, "status_code", None) == 408 and info.value is seen["error"]


def test_upload_succeeds_when_redis_is_down(make_client, tmp_path):
    client = make_client(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    res = client.post("/upload", data={"userId": "u1"}, files=[photo()])
    assert res.status_code == 201, res.text
    body = res.json()
    assert body["queued"] is False and body["files"][0]["queued"] is False and "not queued" in body["warning"]
    assert len(stored_files(tmp_path)) == 1
    assert_json_error(client.get("/jobs/whatever"), 503, "redis-unavailable")
    assert client.get("/stats").json()["redis"] is False


def test_job_status_and_outputs_after_the_worker(client, redis_server, r, tmp_path):
    info = client.post("/upload", data={"userId": "u1"}, files=[photo()]).json()["files"][0]
    root = str((tmp_path / "uploads").resolve())
    with running_worker(redis_server.url, allowed_roots=(root,)):
        wait_for(lambda: client.get(f"/jobs/{info['jobId']}").json().get("state") == "done", what="job done")
    state = client.get(f"/jobs/{info['jobId']}").json()
    sizes = {o["operation"]: (o["width"], o["height"]) for o in state["outputs"]}
    assert sizes == {"thumbnail": (320, 214), "blur": (640, 427), "low-quality": (640, 427)}
    for url in info["outputs"].values():
        res = client.get(url)
        assert res.status_code == 200 and res.headers["content-type"] == "image/webp"
        assert res.content[:4] == b"RIFF" and res.headers["x-content-type-options"] == "nosniff"
    stats = client.get("/stats").json()
    assert stats["done"] == 1 and stats["jobs"] == 0


def test_files_are_read_only_and_confined(client, tmp_path):
    root = tmp_path / "uploads"
    processed = root / "u1" / "processed"
    processed.mkdir(parents=True)
    (processed / "a_blur.webp").write_bytes(b"RIFF....WEBP")
    (root / "u1" / "a.jpg").write_bytes(b"\xff\xd8\xff original")
    secret = tmp_path / "secret_blur.webp"
    secret.write_bytes(b"secret")
    os.symlink(secret, processed / "link_blur.webp")
    assert client.get("/files/u1/processed/a_blur.webp").content == b"RIFF....WEBP"
    for path in [
        "/files/u1/processed/",
        "/files/u1/processed/link_blur.webp",
        "/files/u1/a.jpg",
        "/files/u1/processed/..%2Fa.jpg",
        "/files/..%2F..%2Fsecret/processed/x_blur.webp",
        "/files/u1/processed/a.jpg",
        "/files/u1/processed/.hidden_blur.webp",
    ]:
        res = client.get(path)
        assert res.status_code == 404 and res.headers["content-type"].startswith("application/json"), path
    assert client.post("/files/u1/processed/a_blur.webp").status_code == 405
    assert client.put("/files/u1/processed/a_blur.webp", content=b"x").status_code == 405
    assert (processed / "a_blur.webp").read_bytes() == b"RIFF....WEBP"


def test_bearer_token(make_client, tmp_path):
    client = make_client(token="s3cret")
    for method, path in [
        ("post", "/upload"),
        ("get", "/jobs/x"),
        ("get", "/events"),
        ("get", "/stats"),
        ("get", "/files/u1/processed/a_blur.webp"),
    ]:
        res = getattr(client, method)(path)
        assert_json_error(res, 401, "unauthorized")
        assert res.headers["www-authenticate"] == "Bearer"
    res = client.post("/upload", data={"userId": "u1"}, files=[photo()], headers={"Authorization": "Bearer nope"})
    assert_json_error(res, 401, "unauthorized")
    assert stored_files(tmp_path) == []
    res = client.post("/upload", data={"userId": "u1"}, files=[photo()], headers={"Authorization": "Bearer s3cret"})
    assert res.status_code == 201
    assert client.get("/stats?access_token=s3cret").status_code == 200
    # The page and its settings stay public: the page asks for the token.
    assert client.get("/").status_code == 200
    assert client.get("/config").json()["auth"] is True


def test_cors_is_off_unless_asked(make_client):
    plain = make_client()
    res = plain.get("/config", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in res.headers
    pre = plain.options(
        "/upload", headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in pre.headers
    allowed = make_client(cors_origins=("https://app.example",))
    res = allowed.get("/config", headers={"Origin": "https://app.example"})
    assert res.headers["access-control-allow-origin"] == "https://app.example"


def test_the_page_and_its_assets_are_served_without_a_cdn(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in ("/static/app.js", "/static/style.css"):
        res = client.get(asset)
        assert res.status_code == 200, asset
        assert "http://" not in res.text and "https://" not in res.text, f"{asset} loads something remote"
    assert "https://" not in page.text and "http://" not in page.text
    assert client.get("/static/").status_code == 404  # no listing
