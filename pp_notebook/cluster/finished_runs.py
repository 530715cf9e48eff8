"""The functions of finished runs that engines still hold, until they are told to forget them.

A run's function stays on each engine for the run's batches (engine.run_batch keeps it by
run key). When the run ends, its engines are to drop it, with what it captured. A `forget`
request to every engine costs each of them a request (about 2.5 ms of CPU between client,
controller and engine): at 64 engines, 0.16 s of CPU, spent just as the next run of a loop
starts its engines. So the next batch that any run sends an engine takes the keys along
(`take`), and only engines that get none within FORGET_AFTER_S are sent a `forget` of
their own: a notebook's engines are clean a moment after each run, a loop of runs pays
nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

FORGET_AFTER_S = 0.5
"""How long finished runs' functions may wait for a next batch to take their keys along."""


class FinishedRuns:
    """Run keys to forget, by engine. `send(eid, keys)` asks one engine to forget `keys`;
    `live()` lists the engines still there."""

    def __init__(self, send: Callable[[int, list[str]], None],
                 live: Callable[[], Iterable[int]]) -> None:
        self._send = send
        self._live = live
        self._keys: dict[int, list[str]] = {}
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._closed = False

    def add(self, keys: Iterable[str], engines: Iterable[int]) -> None:
        """The engines hold these runs' functions and are to forget them: with their next
        batch, or on their own after FORGET_AFTER_S."""
        keys = list(keys)
        with self._lock:
            if self._closed:
                return
            for eid in engines:
                self._keys.setdefault(eid, []).extend(keys)
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(FORGET_AFTER_S, self.flush)
            self._timer.daemon = True
            self._timer.start()

    def take(self, eid: int) -> list[str]:
        """The keys an engine is to forget, handed to a batch about to go there."""
        with self._lock:
            return self._keys.pop(eid, [])

    def flush(self) -> None:
        """Ask each live engine that still holds finished runs' functions to forget them."""
        with self._lock:
            pending, self._keys = self._keys, {}
        for eid in set(pending) & set(self._live()):
            try:
                self._send(eid, pending[eid])
            except Exception:  # gone meanwhile, or the cluster closed: nothing left to clean
                pass

    def close(self) -> None:
        """Forget nothing more (the cluster is going)."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            self._keys.clear()
