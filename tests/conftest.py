from __future__ import annotations

import json
import struct
import sys
import threading
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from redis_server import RedisServer

import fastimg

DATA = Path(__file__).parent / "data"
PHOTOS = sorted(p.name for p in DATA.iterdir() if p.suffix in (".png", ".jpg"))

CUDA = "cuda" in fastimg.backends().available
requires_cuda = pytest.mark.skipif(not CUDA, reason=f"no usable GPU: {fastimg.backends().cuda_reason}")


def load_photo(name: str) -> np.ndarray:
    with Image.open(DATA / name) as im:
        return np.asarray(im)


class SeededRng:
    """Fresh random inputs on every run, with the seed kept for the failure message."""

    def __init__(self) -> None:
        self.seed = int(np.random.SeedSequence().entropy % (1 << 63))
        self.gen = np.random.default_rng(self.seed)

    def image(self, h: int, w: int, c: int | None) -> np.ndarray:
        shape = (h, w) if c is None else (h, w, c)
        return self.gen.integers(0, 256, shape, dtype=np.uint8)

    def __repr__(self) -> str:
        return f"seed={self.seed}"


@pytest.fixture
def rng() -> SeededRng:
    return SeededRng()


# -- the queue tests ---------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture
def r(redis_server):
    client = redis_server.client()
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture
def uploads(tmp_path):
    """An uploads tree like the seed server's: uploads/<userId>/<uuid>-<name>."""
    root = tmp_path / "uploads"
    (root / "user1").mkdir(parents=True)
    return root


def make_photo(path: Path, size=(800, 600), fmt="JPEG", mode="RGB", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    base = np.linspace(0, 255, w, dtype=np.float64)[None, :, None] * np.ones((h, 1, 1))
    img = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(img)
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path, fmt)
    return path


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height over a few bytes of pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 100))
        + chunk(b"IEND", b"")
    )


def seed_job(uploads: Path, name: str = "a1b2c3d4-photo", ops=("thumbnail", "blur", "low-quality"), **extra) -> dict:
    """A job exactly as the seed's server builds it, for an upload made on disk."""
    src = uploads / "user1" / f"{name}.jpg"
    if not src.exists():
        make_photo(src, seed=zlib.crc32(name.encode()))
    return job_for(uploads, name, src, ops, **extra)


def job_for(uploads: Path, job_id: str, src: Path, ops=("thumbnail",), **extra) -> dict:
    """A job in the seed's format for the file ``src``, written to user1's processed/."""
    job = {
        "jobId": job_id,
        "inputPath": str(src),
        "outputDir": str(uploads / "user1" / "processed"),
        "operations": list(ops),
        "timestamp": 1737158400000,
        "retryCount": 0,
    }
    job.update(extra)
    return job


def push(client, *jobs) -> None:
    for job in jobs:
        client.rpush("image:jobs", job if isinstance(job, (str, bytes)) else json.dumps(job))


def records(client, key: str) -> list:
    return [json.loads(x) for x in client.lrange(key, 0, -1)]


@contextmanager
def running_worker(url: str, **config):
    """gpu-image-worker's Worker in a thread of this process (no signal handlers)."""
    from fastimg.queue.connect import connector
    from fastimg.worker.config import Config
    from fastimg.worker.worker import Worker

    config.setdefault("workers", 1)
    config.setdefault("block_timeout", 0.2)
    config.setdefault("backoff_base", 0.05)
    config.setdefault("heartbeat_ttl", 5.0)
    cfg = Config(**config)
    worker = Worker(connector(url, cfg.block_timeout), cfg)
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stopping.set()
        thread.join(30)
        assert not thread.is_alive(), "worker did not stop"


WORKER_CMD = [sys.executable, "-m", "fastimg.cli.main"]
