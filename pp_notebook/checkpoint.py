"""A crash-safe record of finished items, so a re-run skips what is already done.

The file is an SQLite database (standard library `sqlite3`, so no file format of our own to
get wrong): one row per successful item in table `items`, keyed by the item's name, with its
value pickled (cloudpickle) in a BLOB and its output, engine, host, pid, start, duration and
attempts as plain columns. `add` queues rows and `flush` commits them in one transaction, in
WAL mode with synchronous=FULL: a committed flush survives a SIGKILL (or a power cut), a
killed run loses only what it had not flushed yet. Items are named by a stable hash of the
item itself, or of `key(item)` when the items do not pickle the same way in every session
(sets of strings, objects with addresses in them). Failed items are not kept: a re-run tries
them again. A file that is not ours (another SQLite database has another application_id) is
refused and left as it is. Look inside with the sqlite3 command line tool, e.g.

    sqlite3 -readonly run.ckpt "SELECT key, engine, host, duration_s, attempts FROM items"
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import cloudpickle

from .tasktable import TaskTable

APPLICATION_ID = int.from_bytes(b"ppnb", "big")  # PRAGMA application_id: the file is ours
SCHEMA_VERSION = 1  # PRAGMA user_version
OLD_MAGIC = b"pp_notebook checkpoint 1\n"  # pp_notebook 0.1's framed format: not read
_SQLITE_MAGIC = b"SQLite format 3\x00"
_FIELDS = ("value", "output", "engine", "host", "pid", "started", "duration_s", "attempts")
_COLUMNS = _FIELDS[1:]  # stored as they are; `value` is pickled
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY,  -- blake2b of the pickled item (or of key(item))
    value BLOB NOT NULL,   -- cloudpickle of the result
    output TEXT, engine INTEGER, host TEXT, pid INTEGER,
    started REAL,          -- the client's clock, epoch seconds
    duration_s REAL, attempts INTEGER
)"""


def _check_file(path: Path) -> bool:
    """Whether `path` holds a checkpoint of ours; False when missing or empty, ValueError
    when it holds anything else. Reads the header only: never creates nor changes a file."""
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except FileNotFoundError:
        return False
    if not header:
        return False
    if header.startswith(OLD_MAGIC):
        raise ValueError(f"{path} is a checkpoint in pp_notebook 0.1's framed format, which "
                         "this version does not read: rerun with a new checkpoint path (the "
                         "old file is left as it is)")
    if not header.startswith(_SQLITE_MAGIC) or len(header) < 100 \
            or int.from_bytes(header[68:72], "big") != APPLICATION_ID:
        raise ValueError(f"{path} exists and is not a pp_notebook checkpoint: choose another "
                         "path (it is left as it is)")
    version = int.from_bytes(header[60:64], "big")
    if version != SCHEMA_VERSION:
        raise ValueError(f"{path} is a pp_notebook checkpoint of schema {version}, which this "
                         f"version (schema {SCHEMA_VERSION}) does not read: rerun with a new "
                         "checkpoint path (the file is left as it is)")
    return True


class Checkpoint:
    """The finished items of a run, in the file at `path` (created if missing).

    Made in one thread and used by another (the run's scheduling thread), one at a time."""

    def __init__(self, path: str | os.PathLike, key: Callable[[Any], Any] | None = None) -> None:
        self.path = Path(path)
        self._key = key
        self._rows: list[tuple] = []
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            existed = _check_file(self.path)
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False)
            if not existed:  # atomic in rollback mode: the file is ours, whole, or empty
                self._db.executescript(f"BEGIN IMMEDIATE; PRAGMA application_id={APPLICATION_ID};"
                                       f" PRAGMA user_version={SCHEMA_VERSION}; {_SCHEMA}; COMMIT")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        except (OSError, sqlite3.Error) as exc:
            if self._db is not None:
                self._db.close()
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ValueError(f"cannot use {self.path} as a checkpoint: {message}") from None

    @staticmethod
    def saved_count(path: str | os.PathLike) -> int:
        """How many items the checkpoint at `path` holds (0 if there is none yet), read
        while a run may be writing it; creates and changes nothing."""
        path = Path(path)
        if not _check_file(path):
            return 0
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            return db.execute("SELECT count(*) FROM items").fetchone()[0]
        finally:
            db.close()

    @property
    def _open_db(self) -> sqlite3.Connection:
        """The database connection: open from `__init__` until `close()`."""
        assert self._db is not None, "the checkpoint is closed"
        return self._db

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

    def restore(self, table: TaskTable, keys: list[str]) -> int:
        """Fill the table's tasks of items already done from the file; return how many.

        Only the rows of these keys are read, one at a time."""
        db = self._open_db
        db.execute("CREATE TEMP TABLE wanted (task INTEGER PRIMARY KEY, key TEXT NOT NULL)")
        try:
            with db:  # one transaction for the inserts
                db.execute("BEGIN")
                db.executemany("INSERT INTO wanted VALUES (?, ?)", zip(range(len(table)), keys))
            rows = db.execute(f"SELECT wanted.task, items.value, "
                              f"{', '.join(f'items.{c}' for c in _COLUMNS)} "
                              "FROM wanted JOIN items ON items.key = wanted.key")
            with closing(rows):
                restored = 0
                for task, value, *columns in rows:
                    table.update(task, value=pickle.loads(value), **dict(zip(_COLUMNS, columns)),
                                 status="ok", resumed=True)
                    restored += 1
        finally:
            db.execute("DROP TABLE temp.wanted")
        return restored

    def add(self, key: str, table: TaskTable, task: int) -> None:
        """Queue a successful task's row; `flush` makes it durable."""
        fields = table.fields(task)
        value = cloudpickle.dumps(fields["value"], protocol=pickle.HIGHEST_PROTOCOL)
        self._rows.append((key, value, *(fields[name] for name in _COLUMNS)))

    def flush(self) -> None:
        """Commit the queued rows in one transaction: on disk when this returns."""
        if self._rows:
            db = self._open_db
            with db:  # commits, or rolls back on an error
                db.execute("BEGIN IMMEDIATE")
                db.executemany(f"INSERT OR REPLACE INTO items VALUES "
                               f"({', '.join('?' * (2 + len(_COLUMNS)))})", self._rows)
            self._rows.clear()

    def close(self) -> None:
        """Flush, and leave a single file behind (no -wal or -shm) unless someone else is
        reading it now."""
        if self._db is None:
            return
        try:
            self.flush()
            self._db.execute("PRAGMA busy_timeout=0")
            try:
                self._db.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.OperationalError:  # another connection has it open: stay in WAL
                pass
        finally:
            self._db.close()
            self._db = None
