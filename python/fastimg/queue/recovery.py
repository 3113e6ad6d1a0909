"""Taking back the jobs of slots that lost their lease: dead processes, slots
forgotten by the registry, lists filled by a reply that never arrived."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from ..image.write import remove_stale_temps
from . import outcomes
from .jobs import parse_job
from .lists import Queue
from .wire import dumps


def recover(
    queue: Queue,
    own: Collection[str],
    max_retries: int,
    say: Callable[[str], None],
    scan_all: bool,
    allowed_roots: Sequence[str] = (),
) -> int:
    """Recover every job held by a slot without a lease: registered slots
    always, and with ``scan_all`` every in-flight list in Redis. Each job's
    attempt counts; past ``max_retries`` it fails as ``worker-died``, and the
    temporary files its last attempt left are removed. Returns the jobs moved."""
    candidates: dict[str, None] = dict.fromkeys(queue.dead_workers())
    if scan_all:
        candidates.update(dict.fromkeys(queue.orphaned_slots()))
    moved = 0
    for dead in candidates:
        if dead in own:  # our own lease lapsed in an outage: the slot is alive and still holds its job
            continue
        for raw in queue.held(dead):
            outcome = outcomes.recovered(raw, dead, max_retries)
            failed = outcome.list == "failed"
            if queue.recover(dead, raw, dumps(outcome.record), to_failed=failed) == 1:
                moved += 1
                say(outcome.message)
                if failed:
                    _remove_temps(raw, allowed_roots)
        queue.retire(dead)
    return moved


def _remove_temps(raw: bytes, allowed_roots: Sequence[str]) -> None:
    try:
        job = parse_job(raw, allowed_roots)
    except Exception:  # noqa: BLE001 - a payload that is not a job wrote no files
        return
    remove_stale_temps(job)
