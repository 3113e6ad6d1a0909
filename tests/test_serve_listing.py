"""What the page reads besides uploads and events: a user's earlier uploads
(GET /uploads, bounded and paged), a job's outputs in one ZIP file, the
favicon; in this process against the suite's redis-server."""

from __future__ import annotations

import io
import os
import time
import zipfile

import pytest
from test_serve_api import assert_json_error, make_client_fixture, photo  # noqa: F401 (fixture)

from fastimg.image.spec import OPERATIONS


def _upload(client, user: str, name: str) -> dict:
    res = client.post("/upload", data={"userId": user}, files=[photo(name)])
    assert res.status_code == 201, res.text
    return res.json()["files"][0]


def test_a_users_uploads_newest_first_page_by_page(make_client, tmp_path):
    client = make_client()
    made = []
    for i in range(5):
        made.append(_upload(client, "u1", f"p{i}.jpg"))
        time.sleep(0.01)  # distinct modification times
    _upload(client, "someone-else", "theirs.jpg")
    seen, cursor = [], None
    for expected in (2, 2, 1):
        params = {"user": "u1", "limit": 2} | ({"before": cursor} if cursor else {})
        page = client.get("/uploads", params=params).json()
        assert len(page["uploads"]) == expected
        seen += page["uploads"]
        cursor = page["next"]
    assert cursor is None
    assert [u["jobId"] for u in seen] == [m["jobId"] for m in reversed(made)]
    first = seen[0]
    assert first["name"] == "p4.jpg" and first["bytes"] == made[-1]["bytes"]
    assert first["status"]["state"] == "queued" and first["outputs"] == made[-1]["outputs"]
    assert first["archive"] == made[-1]["archive"]


def test_the_listing_is_bounded_and_confined(make_client, tmp_path):
    client = make_client()
    _upload(client, "u1", "a.jpg")
    root = tmp_path / "uploads" / "u1"
    (root / ".partial.part").write_bytes(b"x")
    (root / "not-stored-by-serve.jpg").write_bytes(b"x")
    os.symlink("/etc/passwd", root / "00000000-0000-0000-0000-000000000000-link.jpg")
    listed = client.get("/uploads", params={"user": "u1"}).json()["uploads"]
    assert [u["name"] for u in listed] == ["a.jpg"]
    assert client.get("/uploads", params={"user": "nobody"}).json() == {"userId": "nobody", "uploads": [], "next": None}
    assert_json_error(client.get("/uploads", params={"user": "../u1"}), 400, "invalid-user-id")
    assert_json_error(client.get("/uploads"), 400, "user-id-required")
    for limit in ("0", "101", "x"):
        assert_json_error(client.get("/uploads", params={"user": "u1", "limit": limit}), 400, "bad-request")
    assert_json_error(client.get("/uploads", params={"user": "u1", "before": "nonsense"}), 400, "bad-request")


def test_the_listing_needs_the_token(make_client):
    client = make_client(token="s3cret")
    assert_json_error(client.get("/uploads", params={"user": "u1"}), 401, "unauthorized")
    assert client.get("/uploads", params={"user": "u1", "access_token": "s3cret"}).status_code == 200


def test_a_jobs_outputs_in_one_zip(make_client, tmp_path):
    client = make_client()
    processed = tmp_path / "uploads" / "u1" / "processed"
    processed.mkdir(parents=True)
    for op in OPERATIONS:
        (processed / f"job-1_{op}.webp").write_bytes(b"RIFF" + op.encode())
    (processed / "job-1_other.webp").write_bytes(b"not an output")
    res = client.get("/files/u1/processed/job-1.zip")
    assert res.status_code == 200 and res.headers["content-type"] == "application/zip"
    assert res.headers["content-disposition"] == "attachment"
    with zipfile.ZipFile(io.BytesIO(res.content)) as archive:
        assert sorted(archive.namelist()) == sorted(f"job-1_{op}.webp" for op in OPERATIONS)
        assert archive.read("job-1_blur.webp") == b"RIFFblur"
    os.symlink(tmp_path, processed / "outside_thumbnail.webp")
    for path in ["/files/u1/processed/nothing.zip", "/files/u1/processed/outside.zip", "/files/u1/processed/..zip"]:
        assert_json_error(client.get(path), 404, "not-found")


@pytest.mark.parametrize("path", ["/favicon.ico", "/static/favicon.ico"])
def test_the_favicon(make_client, path):
    res = make_client().get(path)
    assert res.status_code == 200 and res.content[:4] == b"\x00\x00\x01\x00", res.content[:8]  # an ICO file


def test_limits_read_as_sizes(make_client):
    client = make_client(max_body_bytes=50_000)
    body = assert_json_error(client.post("/upload", data={"userId": "u1"}, files=[photo()]), 413, "too-large")
    assert body["message"].endswith("KiB, over the limit of 48.8 KiB") and body["limit"] == 50_000
