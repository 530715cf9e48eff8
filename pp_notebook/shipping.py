"""Pickling what goes to the engines: many small items fast, refusing process-local state, and
naming what cannot go.

Every pickler here refuses objects whose state belongs to this process (an open file and its
position, a socket, a lock, a generator, a database connection, ...): a copy on each engine
would behave differently on each, silently. Callers pickle everything together once (the
usual, fast path) and ask `unpicklable` only when that failed, to name each culprit.
"""

from __future__ import annotations

import io
import mmap
import multiprocessing.connection
import multiprocessing.pool
import multiprocessing.process
import multiprocessing.queues
import multiprocessing.synchronize
import pickle
import queue
import random
import socket
import sqlite3
import subprocess
import threading
import types
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import cloudpickle
import numpy as np

from .errors import SameRandomStream
from .fmt import PLAIN_TYPES

_PROCESS_LOCAL: tuple[tuple[tuple[type, ...], str, str], ...] = (
    ((io.IOBase,), "an open file or stream", "its position and buffer"),
    ((socket.socket,), "a socket", "its connection"),
    ((types.GeneratorType, types.AsyncGeneratorType),
     "a generator", "how far it has run"),
    ((types.CoroutineType,), "a coroutine", "how far it has run"),
    ((type(threading.Lock()), type(threading.RLock()), threading.Condition, threading.Event,
      threading.Semaphore, threading.Barrier, threading.Thread, queue.Queue),
     "a threading primitive", "who holds it and who waits"),
    ((multiprocessing.synchronize.SemLock, multiprocessing.synchronize.Condition,
      multiprocessing.synchronize.Event, multiprocessing.synchronize.Barrier,
      multiprocessing.queues.Queue, multiprocessing.pool.Pool,
      multiprocessing.process.BaseProcess, multiprocessing.connection.Connection),
     "a multiprocessing primitive", "its handles to other processes"),
    ((sqlite3.Connection, sqlite3.Cursor), "a database connection", "its session"),
    ((subprocess.Popen,), "a subprocess handle", "its child process"),
    ((mmap.mmap,), "a memory map", "its mapping and position"),
)


def process_local(obj: Any) -> tuple[str, str] | None:
    """What `obj` is and which state of this process it holds, as
    `("a socket", "its connection")`, or None when it can travel."""
    for types_, what, state in _PROCESS_LOCAL:
        if isinstance(obj, types_):
            return what, state
    if "connection" in type(obj).__name__.lower() and not isinstance(obj, type) \
            and all(callable(getattr(obj, name, None)) for name in ("cursor", "commit")):
        return "a database connection", "its session"  # any DB-API 2 driver's connection
    return None


def warn_same_streams(named: Mapping[str, tuple[Any, str]], seed: str) -> None:
    """Warn, before the run, of each random generator among {name: (value, where)}: every
    engine gets a copy in the same state and draws the same numbers."""
    for name, (value, where) in named.items():
        if isinstance(value, (random.Random, np.random.Generator, np.random.RandomState)):
            warnings.warn(SameRandomStream(
                f"`{name}` ({where}, {type(value).__name__}) is a random generator: every "
                "engine gets a copy in the same state and draws the same numbers. Seed one "
                f"from the item in the task instead, e.g. `rng = numpy.random.default_rng("
                f"{seed})`"), stacklevel=3)


class ProcessLocalState(TypeError):
    """An object that holds state of this process was about to be sent to the engines."""

    def __init__(self, obj: Any, what: str, state: str) -> None:
        self.obj, self.what, self.state = obj, what, state
        super().__init__(f"{type(obj).__name__} is {what}: {self.why}")

    @property
    def why(self) -> str:
        return (f"it holds state of this process ({self.state}), so each engine would work on "
                "a copy of its own and results would depend on scheduling")


class _GuardedPickler(cloudpickle.Pickler):
    """cloudpickle, refusing process-local objects wherever they sit in the object graph."""

    def reducer_override(self, obj: Any) -> Any:
        found = process_local(obj)
        if found is not None:
            raise ProcessLocalState(obj, *found)
        return super().reducer_override(obj)


def dumps(obj: Any, share: Callable[[Any], str | None] | None = None) -> bytes:
    """cloudpickle.dumps, refusing process-local state with ProcessLocalState. `share(value)`
    may name a value (its fingerprint) to leave out of the pickle: it then stands as a
    reference, loaded on each engine from its host's copy."""
    buffer = io.BytesIO()
    pickler = _GuardedPickler if share is None else _SharingPickler
    instance = pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    if share is not None:
        instance.share = share
    instance.dump(obj)
    return buffer.getvalue()


class _SharingPickler(_GuardedPickler):
    """Leaves the values `share` names out of the pickle, as references."""

    share: Callable[[Any], str | None]

    def persistent_id(self, obj: Any) -> Any:
        digest = self.share(obj)
        return None if digest is None else ("pp_shared", digest)


class ItemPickler:
    """`dumps` three times faster for many small objects: one Pickler is reused (memo
    cleared between objects) instead of built for each. Not thread-safe."""

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._pickler = _GuardedPickler(self._buffer, protocol=pickle.HIGHEST_PROTOCOL)

    def dumps(self, obj: Any) -> bytes:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._pickler.clear_memo()
        self._pickler.dump(obj)
        return self._buffer.getvalue()


def pack_plain(indices: list[int], values: list, limit: int) -> bytes | None:
    """A batch's items pickled in one go, when all are plain scalars and the whole is at most
    `limit` bytes; None otherwise (pickle them one by one: pack_pickled). Ten times cheaper than
    one pickle per item, for the common `range` or list of numbers or names."""
    if not set(map(type, values)) <= PLAIN_TYPES:
        return None
    packed = pickle.dumps((indices, values, False), protocol=pickle.HIGHEST_PROTOCOL)
    return packed if len(packed) <= limit else None


def pack_pickled(indices: list[int], pickles: list[bytes]) -> bytes:
    """A batch of items pickled one by one: the engine loads each inside its own task, so an
    item that cannot be loaded there fails alone (run_batch reads both forms)."""
    return pickle.dumps((indices, pickles, True), protocol=pickle.HIGHEST_PROTOCOL)


def unpicklable(named: Mapping[str, Any]) -> dict[str, Exception]:
    """{name: the error pickling raised} for each object of `named` that cannot be sent."""
    found = {}
    for name, obj in named.items():
        try:
            dumps(obj)
        except Exception as exc:
            found[name] = exc
    return found


def refusal(name: str, where: str, error: Exception) -> str:
    """One clause for a value that cannot go, in one form for every kind: `name` (where), why.
    Callers add what to do."""
    if isinstance(error, ProcessLocalState):
        return f"`{name}` ({where}, {type(error.obj).__name__}) is {error.what}: {error.why}"
    return f"`{name}` ({where}) cannot be pickled: {error}"
