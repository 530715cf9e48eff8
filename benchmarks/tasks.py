"""Task functions for bench_core.py, in their own module so every worker can import them.

Every runner (ipyparallel engines, multiprocessing, loky, concurrent.futures) gets them by
name: bench_core.py puts this folder on PYTHONPATH before any worker starts.
"""

from __future__ import annotations

import time

CPU_TASK_S = 0.010


def identity(x):
    """The no-op task: measures pure per-task overhead."""
    return x


def busy(x, seconds: float = CPU_TASK_S):
    """Keep one core busy for `seconds` (a spin on perf_counter, not a sleep); return x."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return x
