"""Adaptive engines: a cluster grows while work waits, and shrinks back when engines stay
idle.

One thread looks twice a second at the work's demand (items not yet sent, each engine's
state: handed in by the running Run through its cluster, never read from the Run itself).
A local cluster starts one engine at a time while a core of this machine is free; a
scheduler's cluster submits a job per waiting item beyond those already pending (the queue
decides where they run). An engine idle longer than `idle_timeout` is retired (its job
cancelled): runs stop sending it work first, so no task is ever stopped halfway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple

import psutil

if TYPE_CHECKING:
    from .handle import KernelCluster

PERIOD_S = 0.5
FREE_CPU_TO_GROW = 0.5
"""Cores that must be idle (machine-wide) before one more engine starts."""


class Demand(NamedTuple):
    """What the work asks of the engines now: items not yet sent, and each engine's state."""

    queued: int
    engine_states: Mapping[int, str]


class Autoscaler:
    """Keeps a local cluster between `min_engines` and `max_engines`, following the work."""

    def __init__(self, handle: KernelCluster, min_engines: int, max_engines: int,
                 idle_timeout: float, demand: Callable[[], Demand | None]) -> None:
        if not 1 <= min_engines <= max_engines:
            raise ValueError(f"need 1 <= min_engines <= max_engines, got {min_engines} and "
                             f"{max_engines}")
        if not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be a positive number of seconds, "
                             f"not {idle_timeout!r}")
        self.handle = handle
        self.demand = demand
        self.min_engines, self.max_engines = min_engines, max_engines
        self.idle_timeout = idle_timeout
        self._idle_since: dict[int, float] = {}
        self._stop = threading.Event()
        psutil.cpu_percent(None)  # the first call only starts the measurement
        self._thread = threading.Thread(target=self._loop, name="pp_notebook-autoscale",
                                        daemon=True)
        self._thread.start()

    def settings(self) -> dict:
        return {"min_engines": self.min_engines, "max_engines": self.max_engines,
                "idle_timeout": self.idle_timeout}

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=15)

    def _loop(self) -> None:
        while not self._stop.wait(PERIOD_S):
            try:
                self.tick()
            except Exception:  # a transient client error: look again at the next tick
                pass

    def tick(self) -> None:
        """Decide once: start an engine, retire one, or do nothing."""
        handle = self.handle
        free_cores = _free_cores()  # measured over the last tick
        handle.refresh()  # engines that joined, and those given up
        live, waiting = handle.live_ids(), handle.waiting()
        demand = self.demand()
        states = demand.engine_states if demand is not None else {}
        now = time.monotonic()
        for eid in live:  # an engine still starting up is not idle: it has work coming
            if states.get(eid, "idle") == "idle":
                self._idle_since.setdefault(eid, now)
            else:
                self._idle_since.pop(eid, None)
        grow = self.min_engines - len(live) - waiting
        if grow <= 0 and demand is not None and demand.queued \
                and all(states.get(eid) in ("busy", "starting") for eid in live):
            room = self.max_engines - len(live) - waiting
            if handle.launcher.scheduler:
                grow = min(room, demand.queued - waiting)
            elif not waiting and free_cores >= FREE_CPU_TO_GROW:  # locally: one at a time
                grow = min(room, 1)
        if grow > 0:
            handle.add_engines(grow, wait=False)
            return
        idle = [e for e in live if now - self._idle_since.get(e, now) > self.idle_timeout]
        if idle and len(live) > self.min_engines:
            handle.retire(max(idle))
            self._idle_since.pop(max(idle), None)


def _free_cores() -> float:
    return (100.0 - psutil.cpu_percent(None)) / 100.0 * (psutil.cpu_count() or 1)
