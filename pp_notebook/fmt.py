"""Short human text for durations, sizes and rates, shared by every view."""

from __future__ import annotations

import functools
import reprlib

import numpy as np


def seconds(value: float | None) -> str:
    """`0.012 s`, `4.2 s`, `3 min 05 s`, `1 h 02 min`: precise when short, coarse when long."""
    if value is None:
        return "–"
    if value < 0.1:
        return f"{value * 1000:.0f} ms" if value >= 0.001 else f"{value * 1e6:.0f} µs"
    if value < 60:
        return f"{value:.1f} s" if value >= 1 else f"{value:.2f} s"
    if value < 3600:
        return f"{int(value // 60)} min {int(value % 60):02d} s"
    return f"{int(value // 3600)} h {int(value % 3600 // 60):02d} min"


def size(n_bytes: float | None) -> str:
    """`512 MB`, `1.2 GB`."""
    if n_bytes is None:
        return "–"
    for unit in ("B", "kB", "MB", "GB"):
        if n_bytes < 1000:
            return f"{n_bytes:.0f} {unit}" if unit != "GB" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return f"{n_bytes:.1f} TB"


def rate(per_second: float) -> str:
    """`32 tasks/s`, `0.50 tasks/s`, `12k tasks/s`."""
    if per_second >= 10_000:
        return f"{per_second / 1000:.0f}k tasks/s"
    return f"{per_second:.0f} tasks/s" if per_second >= 10 else f"{per_second:.2f} tasks/s"


def cores(percent: float | None) -> str:
    """`1.7 cores` from psutil's 170 (percent of one core): what a process uses."""
    if percent is None:
        return "–"
    return f"{percent / 100:.1f} cores"


def short_repr(obj: object, limit: int = 24) -> str:
    """A bounded repr that reads like the user's data: numpy numbers print plainly,
    `(0.3, 0.2)`, not `(np.float64(0.3), 0.2)`."""
    if type(obj) in PLAIN_TYPES:  # no numpy inside: skip setting its print options (10 µs)
        return _shortener(limit).repr(obj)
    with np.printoptions(legacy="1.25"):
        return _shortener(limit).repr(obj)


PLAIN_TYPES = frozenset({int, float, complex, bool, str, bytes, type(None)})
"""Python's own scalars: no numpy inside, and they always pickle and load."""


@functools.lru_cache(maxsize=8)
def _shortener(limit: int) -> reprlib.Repr:
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = limit
    return shortener
