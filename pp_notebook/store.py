"""Big values the tasks share: pickled once, shipped once per host, kept there between runs.

A value above SHARE_THRESHOLD_BYTES (a frame, a series, an array), or one passed to
`pp_notebook.share`, leaves the task's payload: the payload holds a reference, and the value
goes, pickled with protocol 5, to one file per engine host in `/dev/shm`. Its engines map that
file read-only: numeric arrays (and the numeric blocks of pandas frames) are used in place,
zero-copy; string and object columns are unpickled once per engine and cached there.

"Unchanged" is known by a fingerprint: the CRC-32 of each 8 MiB of the protocol-5 buffers
and of the in-band pickle, with their sizes, computed on every core (zlib lets go of the GIL):
22 ms on a 160 MB frame on 2 cores (39 ms in one thread; 96 ms for SHA-1, 200 ms for
BLAKE2b). A value changed in place gets a new fingerprint and ships again; an unchanged one
ships nothing. The chance that a change keeps every CRC is about 1 in 4e9.

The store keeps at most `limit_bytes` of values (least recently used first out); what it
drops, and everything on `forget()` or when the cluster stops, leaves the hosts too.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import threading
import zlib
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

SHARE_THRESHOLD_BYTES = 1_000_000
"""Values at least this big (their numeric data) are shared instead of sent with the task."""
DEFAULT_LIMIT_BYTES = 4 * 2**30
SHM_DIR = "/dev/shm"
CRC_CHUNK_BYTES = 8 << 20
"""A fingerprint's CRCs are of pieces this big, spread over the cores."""
_crc_pool: ThreadPoolExecutor | None = None
_crc_pool_lock = threading.Lock()


@dataclass(eq=False)
class SharedValue:
    """One value the tasks share: its pickle (kept to ship to new hosts) and where it is."""

    digest: str
    name: str
    nbytes: int
    inband: bytes
    buffers: list[pickle.PickleBuffer]


class SharedStore:
    """The kernel's shared values by fingerprint, least recently used first out."""

    def __init__(self, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> None:
        self.limit_bytes = limit_bytes
        self._values: OrderedDict[str, SharedValue] = OrderedDict()
        self._marked: dict[int, Any] = {}  # id -> object passed to share(): kept alive
        self._dropped: list[SharedValue] = []  # evicted, still to be removed from the hosts
        self._lock = threading.Lock()

    def mark(self, value: Any) -> Any:
        """Share `value` whatever its size (`pp_notebook.share`)."""
        self._marked[id(value)] = value
        return value

    def wants(self, value: Any) -> bool:
        """Whether `value` goes by reference: marked, or numeric data over the threshold."""
        return id(value) in self._marked or _numeric_bytes(value) >= SHARE_THRESHOLD_BYTES

    def add(self, value: Any, name: str) -> SharedValue:
        """The store's entry for `value` (pickled once here, fingerprinted): the same entry
        when an unchanged value comes again, so it is not shipped again."""
        buffers: list[pickle.PickleBuffer] = []
        inband = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        digest = _fingerprint(inband, buffers)
        with self._lock:
            known = self._values.get(digest)
            if known is not None:
                self._values.move_to_end(digest)
                known.inband, known.buffers = inband, buffers  # the current object's memory
                return known
            nbytes = len(inband) + sum(b.raw().nbytes for b in buffers)
            entry = self._values[digest] = SharedValue(digest, name, nbytes, inband, buffers)
            while len(self._values) > 1 and self.held_bytes() > self.limit_bytes:
                self._dropped.append(self._values.popitem(last=False)[1])
            return entry

    def held_bytes(self) -> int:
        return sum(value.nbytes for value in self._values.values())

    def values(self) -> list[SharedValue]:
        with self._lock:
            return list(self._values.values())

    def take_dropped(self) -> list[SharedValue]:
        """Values evicted since the last call: the cluster removes them from the hosts."""
        with self._lock:
            dropped, self._dropped = self._dropped, []
        return dropped

    def clear(self) -> list[SharedValue]:
        """Forget every value; returns them, for the cluster to remove from the hosts."""
        with self._lock:
            everything = list(self._values.values()) + self._dropped
            self._values.clear()
            self._dropped = []
            self._marked.clear()
        return everything


def fits_in_shared_memory(nbytes: int) -> bool:
    """Whether /dev/shm here has room for a value (hosts are assumed alike)."""
    try:
        return shutil.disk_usage(SHM_DIR).free > 2 * nbytes
    except OSError:
        return False


def _numeric_bytes(value: Any) -> int:
    """The size of a value's array data, cheaply: numpy arrays and pandas objects only."""
    if isinstance(value, np.ndarray):
        return value.nbytes if value.dtype != object else 0
    if isinstance(value, pd.DataFrame):
        return int(value.memory_usage(index=True, deep=False).sum())
    if isinstance(value, (pd.Series, pd.Index)):
        return int(value.memory_usage(deep=False))
    return 0


def _fingerprint(inband: bytes, buffers: list[pickle.PickleBuffer]) -> str:
    """Size and CRC-32 of the in-band pickle and of each buffer's CRC_CHUNK_BYTES pieces,
    folded into a short name."""
    pieces = [memoryview(inband)]
    sizes = [len(inband)]
    for raw in (b.raw() for b in buffers):
        sizes.append(raw.nbytes)
        pieces += [raw[start:start + CRC_CHUNK_BYTES]
                   for start in range(0, raw.nbytes, CRC_CHUNK_BYTES)]
    crcs = _crcs(pieces)
    parts = [*map(str, sizes), *(f"{crc:08x}" for crc in crcs)]
    return hashlib.blake2b("|".join(parts).encode(), digest_size=10).hexdigest()


def _crcs(pieces: list[memoryview]) -> list[int]:
    """The CRC-32 of each piece, on as many threads as this process has cores."""
    global _crc_pool
    if len(pieces) < 2:
        return [zlib.crc32(piece) for piece in pieces]
    with _crc_pool_lock:
        if _crc_pool is None:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
                else os.cpu_count() or 2
            _crc_pool = ThreadPoolExecutor(cores, "pp_notebook-crc")
    return list(_crc_pool.map(zlib.crc32, pieces))


def _forget_crc_pool() -> None:
    """A forked child has none of its parent's threads: it starts its own pool (and lock)."""
    global _crc_pool, _crc_pool_lock
    _crc_pool, _crc_pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_crc_pool)


STORE = SharedStore()
"""The kernel's one store (its values outlive runs; each cluster knows which host has which)."""
