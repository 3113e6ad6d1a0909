"""The producer side (fastimg.producer): telling images by their bytes,
storing uploads as the seed does, and queueing their jobs."""

from __future__ import annotations

import json
import time

import pytest
import redis
from conftest import make_photo

from fastimg.producer import Producer, build_job, detect_image_type, store_upload
from fastimg.queue import status


def test_detect_image_type_by_content(tmp_path):
    from PIL import Image

    im = Image.new("RGB", (4, 4))
    for fmt, kind in (
        ("JPEG", "jpeg"),
        ("PNG", "png"),
        ("GIF", "gif"),
        ("WEBP", "webp"),
        ("BMP", "bmp"),
        ("TIFF", "tiff"),
    ):
        p = tmp_path / f"x.{fmt}"
        im.save(p, fmt)
        assert detect_image_type(p.read_bytes()[:4096]) == kind
    assert detect_image_type(b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>') == "svg"
    assert detect_image_type(b"%PDF-1.7") is None and detect_image_type(b"") is None


def test_store_upload_and_build_job_follow_the_seed(tmp_path):
    root = tmp_path / "uploads"
    path = store_upload(b"\xff\xd8\xffdata", root, "user123", "../../My Photo.jpg")
    assert path.parent == (root / "user123").resolve()
    uuid_part, name = path.name[:36], path.name[37:]
    assert len(uuid_part.split("-")) == 5 and name == "My Photo.jpg"
    job = build_job(path, "user123", root)
    assert list(job) == ["jobId", "inputPath", "outputDir", "operations", "timestamp", "retryCount"]
    assert job["jobId"] == path.stem and job["inputPath"] == str(path)
    assert job["outputDir"] == str((root / "user123" / "processed").resolve())
    assert job["operations"] == ["thumbnail", "blur", "low-quality"] and job["retryCount"] == 0
    assert abs(job["timestamp"] - time.time() * 1000) < 5000
    with pytest.raises(ValueError):
        store_upload(b"x", root, "../evil", "a.jpg")


def test_producer_enqueues_images_only(r, redis_server, tmp_path):
    root = tmp_path / "uploads"
    img = store_upload(make_photo(tmp_path / "p.jpg").read_bytes(), root, "u1", "p.jpg")
    txt = store_upload(b"hello", root, "u1", "notes.txt")
    producer = Producer(redis_server.client())
    job = producer.enqueue(img, "u1", root)
    assert job is not None and json.loads(r.lindex("image:jobs", 0)) == job
    assert producer.enqueue(txt, "u1", root) is None and r.llen("image:jobs") == 1
    assert status.read(r, job["jobId"])["state"] == "queued"


def test_producer_without_redis_warns_and_returns(tmp_path, caplog):
    root = tmp_path / "uploads"
    img = store_upload(make_photo(tmp_path / "p.jpg").read_bytes(), root, "u1", "p.jpg")
    producer = Producer(redis.Redis(port=1, socket_connect_timeout=0.5))
    with caplog.at_level("WARNING", logger="fastimg.producer"):
        assert producer.enqueue(img, "u1", root) is None
    assert "Redis not available" in caplog.text
