"""Task functions for bench_core.py, in their own module so every worker can import them.

Every runner (ipyparallel engines, multiprocessing, loky, concurrent.futures, dask) gets them
by name: bench_core.py puts this folder on PYTHONPATH before any worker starts. Each returns
its task's index, so a runner's results can be checked against the input order.
"""

from __future__ import annotations

import os
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


def spin(item: tuple[int, float]) -> int:
    """(index, seconds): a CPU-bound task of a known length."""
    index, seconds = item
    return busy(index, seconds)


def nap(item: tuple[int, float]) -> int:
    """(index, seconds): an I/O-bound task, a sleep that leaves the core free."""
    index, seconds = item
    time.sleep(seconds)
    return index


def straggle(item: tuple[int, float, float, str | None]) -> tuple[int, float]:
    """(index, seconds, first_attempt_s, marker): spin `seconds`, after a sleep of
    `first_attempt_s` on the task's first attempt only; return (index, when it finished).

    The first attempt is the one that creates `marker` (atomically, as it starts), so a backup
    copy started while it sleeps, or any later attempt, runs fast. The finish time (this
    machine's wall clock, shared by every worker) gives the run's tail.
    """
    index, seconds, first_attempt_s, marker = item
    if marker is not None:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            time.sleep(first_attempt_s)
    busy(index, seconds)
    return index, time.time()


def group_mean(frame, key):
    """The analytics cell of bench_shared.py: the mean of one group of a big frame."""
    return float(frame.x[frame.g == key].mean())
