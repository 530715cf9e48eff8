"""The functions of finished runs that engines still hold, until they are told to forget them.

A run's function stays on each engine for the run's batches (engine.run_batch keeps it by
run key). When the run ends, its engines are to drop it, with what it captured. A `forget`
request to every engine costs each of them a request (about 2.5 ms of CPU between client,
controller and engine): at 64 engines, 0.16 s of CPU, spent just as the next run of a loop
starts its engines. So the next batch that any run sends an engine takes the keys along
(`take`), and an engine that gets none within FORGET_AFTER_S of its oldest key is sent a
`forget` of its own: a notebook's engines are clean a moment after each run, a loop of runs
pays nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

FORGET_AFTER_S = 0.5
"""How long finished runs' functions may wait on an engine for a batch to take their keys."""


class FinishedRuns:
    """Run keys to forget, by engine. `tell({engine: keys})` sends the `forget` requests
    and returns what to wait on for them to leave."""

    def __init__(self, tell: Callable[[dict[int, list[str]]], list[Any]]) -> None:
        self._tell = tell
        self._keys: dict[int, tuple[float, list[str]]] = {}  # engine -> (oldest since, keys)
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._closed = False

    def add(self, keys: Iterable[str], engines: Iterable[int]) -> None:
        """The engines hold these runs' functions and are to forget them: with their next
        batch, or on their own FORGET_AFTER_S from now."""
        keys, engines = list(keys), list(engines)
        if not keys or not engines:
            return
        now = time.monotonic()
        with self._lock:
            if self._closed:
                return
            for eid in engines:
                since, held = self._keys.get(eid, (now, []))
                self._keys[eid] = (since, held + keys)
            self._arm()

    def take(self, eid: int) -> list[str]:
        """The keys an engine is to forget, handed to a batch about to go there."""
        with self._lock:
            return self._keys.pop(eid, (0.0, []))[1]

    def flush(self) -> list[Any]:
        """Tell every engine to forget what it still holds, now; returns what to wait on."""
        with self._lock:
            pending, self._keys = self._keys, {}
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        return self._tell({eid: keys for eid, (_, keys) in pending.items()}) if pending else []

    def close(self) -> None:
        """Forget nothing more (the cluster is going)."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            self._keys.clear()

    def _arm(self) -> None:
        """Under the lock: a timer for the oldest keys, unless one is set."""
        if self._timer is None and self._keys:
            oldest = min(since for since, _ in self._keys.values())
            self._timer = threading.Timer(
                max(0.0, oldest + FORGET_AFTER_S - time.monotonic()), self._due)
            self._timer.daemon = True
            self._timer.start()

    def _due(self) -> None:
        """Tell the engines whose keys have waited FORGET_AFTER_S; wait for the others."""
        with self._lock:
            self._timer = None
            if self._closed:
                return
            now = time.monotonic()
            due = {eid: keys for eid, (since, keys) in self._keys.items()
                   if now - since >= FORGET_AFTER_S}
            for eid in due:
                del self._keys[eid]
            self._arm()
        if due:
            self._tell(due)
