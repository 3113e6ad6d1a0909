"""fastimg's CPU kernels beside pyvips, OpenCV and Pillow on the 12 MP photo:
``pytest bench/``.

Each test runs one operation's contenders interleaved, pinned to one core with
OpenCV and libvips on one thread, and timed by CPU time (bench/peers.py); the
ratio table of the medians is printed at the end of the run. pyvips and
OpenCV are optional (``pip install ".[bench]"``): a missing one is left out of
the table. ``python bench/peers.py`` also measures each CPU engine and all
cores.
"""

from __future__ import annotations

import peers
import pytest

ROUNDS = 7


@pytest.mark.parametrize("op", peers.OPS)
def test_against_peers(photo12, kernel_results, op):
    with peers.one_core():
        result = peers.measure(photo12, (op,), ROUNDS, "1")
    kernel_results.append(result)
    medians = result["ops"][op]
    assert medians["fastimg"] > 0 and "Pillow" in medians
