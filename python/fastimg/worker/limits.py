"""The limits a job's input is held to; enforced while reading and decoding."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Inputs beyond these fail at once with reason ``too-large``."""

    max_input_bytes: int = 200 * 1024 * 1024
    max_pixels: int = 120_000_000  # checked from the header, before decoding
    max_frames: int = 2000  # animations: only the first frame is used, but all are scanned
