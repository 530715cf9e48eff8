"""Sampling in a thread while a block runs: how the benchmarks follow memory at its peak.

Only the standard library: bench_core.py imports this at its top, which dask's and loky's
workers re-run when they start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def sampling(sample: Callable[[], Any], interval_s: float, name: str) -> Iterator[None]:
    """Call `sample()` every `interval_s` in a thread named `name` while the block runs, and
    once more at its end (a peak between two samples would otherwise be missed)."""
    stop = threading.Event()

    def follow() -> None:
        while not stop.wait(interval_s):
            sample()

    thread = threading.Thread(target=follow, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        sample()
