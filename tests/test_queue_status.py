"""Job status (fastimg.queue.status): the hash per job and the messages on
image:events, through a job's life."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import push, running_worker, seed_job
from redis_server import wait_for

from fastimg.queue import status


def test_status_and_events_follow_the_job(r, redis_server, uploads):
    job = seed_job(uploads, name="watched")
    pubsub = redis_server.client().pubsub()
    pubsub.subscribe("image:events")
    pubsub.get_message(timeout=1)  # the subscription confirmation
    push(r, job)
    with running_worker(redis_server.url):
        wait_for(lambda: r.llen("image:done"))
    events = []
    while (m := pubsub.get_message(timeout=0.5)) is not None:
        events.append(json.loads(m["data"]))
    assert [e["state"] for e in events] == ["processing"] * 4 + ["done"]
    # Outputs are encoded at once; each event adds the one that is now in place.
    completed = [e["completed"] for e in events[:4]]
    assert [len(c) for c in completed] == [0, 1, 2, 3] and sorted(completed[3]) == sorted(job["operations"])
    assert all(completed[i] == completed[i + 1][:i] for i in range(3))
    st = status.read(r, "watched")
    assert st["state"] == "done" and [o["operation"] for o in st["outputs"]] == job["operations"]
    assert 0 < r.ttl("image:status:watched") <= 7 * 24 * 3600


def test_status_of_retrying_and_failed_jobs(r, redis_server, uploads):
    job = seed_job(uploads, name="gone", ops=["thumbnail"])
    Path(job["inputPath"]).unlink()
    push(r, job)
    with running_worker(redis_server.url, backoff_base=5.0, max_retries=1):
        wait_for(lambda: status.read(r, "gone").get("state") == "retrying")
        st = status.read(r, "gone")
        assert st["reason"] == "input-missing" and st["attempt"] == 1 and st["nextAttemptAt"] > time.time() * 1000
    push(r, seed_job(uploads, name="text", ops=["thumbnail"]))
    Path(uploads / "user1" / "text.jpg").write_text("not an image")
    with running_worker(redis_server.url):
        wait_for(lambda: status.read(r, "text").get("state") == "failed")
    assert status.read(r, "text")["reason"] == "unsupported-format"
