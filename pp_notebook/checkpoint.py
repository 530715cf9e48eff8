"""A crash-safe record of finished items, so a re-run skips what is already done.

The file is append-only: each successful item is one frame (length, CRC32, pickled entry),
written and fsync'd as its batch comes back. A crash can only tear the last frame; reading
stops at the first torn or corrupt frame and cuts it off before appending again. Items are
named by a stable hash of the item itself, or of `key(item)` when the items do not pickle
the same way in every session (sets of strings, objects with addresses in them).
Failed items are not kept: a re-run tries them again.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any, Callable

import cloudpickle

from .records import TaskRecord

MAGIC = b"pp_notebook checkpoint 1\n"  # the file's first bytes: never append to another file
_HEADER = struct.Struct("<II")  # payload length, CRC32 of the payload
_FIELDS = ("value", "output", "engine", "host", "pid", "started", "duration_s", "attempts")


class Checkpoint:
    """The finished items of a run, in the file at `path` (created if missing)."""

    def __init__(self, path: str | os.PathLike, key: Callable[[Any], Any] | None = None) -> None:
        self.path = Path(path)
        self._key = key
        self.done: dict[str, dict] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            valid_end = self._read()
            self._file = open(self.path, "ab")
        except OSError as exc:
            raise ValueError(f"cannot use {self.path} as a checkpoint: {exc.strerror or exc}") \
                from None
        if valid_end == 0:
            self._file.write(MAGIC)
        elif self._file.tell() != valid_end:  # a torn frame from a crash: drop it
            self._file.truncate(valid_end)
            self._file.seek(valid_end)
        self._frames: list[bytes] = []

    def _read(self) -> int:
        """Load every whole frame; return the offset where the valid part of the file ends."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        if not data:
            return 0
        if not data.startswith(MAGIC):
            raise ValueError(f"{self.path} exists and is not a pp_notebook checkpoint: choose "
                             "another path (it is left as it is)")
        offset = len(MAGIC)
        while offset + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, offset)
            payload = data[offset + _HEADER.size: offset + _HEADER.size + length]
            if len(payload) < length or zlib.crc32(payload) != crc:
                break
            key, fields = pickle.loads(payload)
            self.done[key] = fields
            offset += _HEADER.size + length
        return offset

    def key_of(self, item: Any) -> str:
        """A stable name for an item: the hash of its pickle (or of `key(item)`)."""
        named = self._key(item) if self._key is not None else item
        try:
            data = pickle.dumps(named, protocol=4)
        except Exception as exc:
            raise ValueError(
                f"item {item!r:.60} cannot name its checkpoint entry ({exc}); pass "
                "key=a function returning a str or tuple that identifies each item") from None
        return hashlib.blake2b(data, digest_size=16).hexdigest()

    def restore(self, records: list[TaskRecord], keys: list[str]) -> int:
        """Fill the records of items already done from the file; return how many."""
        restored = 0
        for record, key in zip(records, keys):
            fields = self.done.get(key)
            if fields is not None:
                for name in _FIELDS:
                    setattr(record, name, fields[name])
                record.status = "ok"
                record.resumed = True
                restored += 1
        return restored

    def add(self, key: str, record: TaskRecord) -> None:
        """Queue a successful item's entry; `flush` makes it durable."""
        fields = {name: getattr(record, name) for name in _FIELDS}
        payload = cloudpickle.dumps((key, fields), protocol=pickle.HIGHEST_PROTOCOL)
        self._frames.append(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)

    def flush(self) -> None:
        """Write the queued entries and wait until they are on disk."""
        if self._frames:
            self._file.write(b"".join(self._frames))
            self._frames.clear()
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self.flush()
        self._file.close()
