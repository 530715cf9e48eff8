"""The checkpoint file on its own: what it keeps, what a crash loses, what it refuses to touch."""

import hashlib
import os
import pickle
import signal
import sqlite3
import struct
import threading
import zlib
from dataclasses import replace

import pytest

from pp_notebook.checkpoint import Checkpoint
from pp_notebook.records import Records, TaskRecord, table_of
from pp_notebook.tasktable import TaskTable


def done(task, value, **fields):
    fields = {"output": f"out {task}\n", "engine": task % 2, "host": "h", "pid": 100 + task,
              "started": 1.5e9 + task, "duration_s": 0.25, "attempts": 1, **fields}
    return TaskRecord(task, task, "ok", value, **fields)


def add(checkpoint, record):
    """Queue `record`'s row, as a run does from its table."""
    checkpoint.add(checkpoint.key_of(record.item), table_of([replace(record, task=0)]), 0)


def save(path, records, key=None):
    checkpoint = Checkpoint(path, key)
    for record in records:
        add(checkpoint, record)
    checkpoint.close()


def restored(path, items, key=None):
    checkpoint = Checkpoint(path, key)
    table = TaskTable(list(items))
    count = checkpoint.restore(table, [checkpoint.key_of(item) for item in table.items])
    checkpoint.close()
    return count, Records(table)


def files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_saved_items_come_back_with_all_their_fields(tmp_path):
    path = tmp_path / "run.ckpt"
    save(path, [done(0, {"x": 0}), done(2, [2, "two"]), done(3, None, output="", pid=None)])
    assert Checkpoint.saved_count(path) == 3
    count, records = restored(path, range(5))
    assert count == 3
    assert [r.status for r in records] == ["ok", "pending", "ok", "ok", "pending"]
    assert [r.resumed for r in records] == [True, False, True, True, False]
    assert records[0].value == {"x": 0} and records[2].value == [2, "two"]
    assert (records[2].output, records[2].engine, records[2].host, records[2].pid,
            records[2].started, records[2].duration_s, records[2].attempts) \
        == ("out 2\n", 0, "h", 102, 1.5e9 + 2, 0.25, 1)
    assert records[3].value is None and records[3].pid is None and records[3].output == ""
    assert records[1].value is None and records[1].attempts == 0


def test_the_same_item_saved_twice_keeps_the_last(tmp_path):
    path = tmp_path / "run.ckpt"
    save(path, [done(0, "first"), done(0, "second")])
    assert Checkpoint.saved_count(path) == 1
    assert restored(path, [0])[1][0].value == "second"


def test_only_flushed_items_survive_a_sigkill(tmp_path):
    path = tmp_path / "run.ckpt"
    pid = os.fork()
    if pid == 0:  # the child: a kernel killed mid-run, no close, no atexit
        try:
            checkpoint = Checkpoint(path)
            for i in range(3):
                add(checkpoint, done(i, i * 10))
            checkpoint.flush()
            for i in range(3, 5):
                add(checkpoint, done(i, i * 10))
            os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert Checkpoint.saved_count(path) == 3
    count, records = restored(path, range(5))
    assert count == 3 and [r.value for r in records] == [0, 10, 20, None, None]
    save(path, [done(i, i * 10) for i in range(3, 5)])  # the re-run goes on from there
    assert Checkpoint.saved_count(path) == 5


def test_add_flush_and_close_work_from_another_thread(tmp_path):
    path = tmp_path / "run.ckpt"
    checkpoint = Checkpoint(path)  # made in the caller's thread, used by the run's thread
    assert checkpoint.restore(TaskTable([0]), [checkpoint.key_of(0)]) == 0

    def scheduling():
        add(checkpoint, done(0, "zero"))
        checkpoint.flush()
        checkpoint.close()

    thread = threading.Thread(target=scheduling)
    thread.start()
    thread.join()
    assert restored(path, [0])[1][0].value == "zero"


def test_the_file_reads_with_plain_sqlite(tmp_path):
    path = tmp_path / "run.ckpt"
    save(path, [done(i, i) for i in range(4)])
    assert sorted(files(tmp_path)) == ["run.ckpt"]  # closed: no -wal or -shm left behind
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    assert db.execute("SELECT count(*) FROM items").fetchone() == (4,)
    assert db.execute("SELECT engine, host, attempts FROM items WHERE pid = 102").fetchall() \
        == [(0, "h", 1)]
    assert db.execute("PRAGMA user_version").fetchone() == (1,)
    assert db.execute("PRAGMA application_id").fetchone()[0] != 0
    db.close()


def test_counting_creates_and_changes_nothing(tmp_path):
    assert Checkpoint.saved_count(tmp_path / "missing.ckpt") == 0
    assert list(tmp_path.iterdir()) == []
    save(tmp_path / "run.ckpt", [done(0, 0)])
    before = files(tmp_path)
    assert Checkpoint.saved_count(tmp_path / "run.ckpt") == 1
    assert files(tmp_path) == before


def test_an_empty_file_becomes_a_checkpoint(tmp_path):
    path = tmp_path / "run.ckpt"
    path.touch()
    assert Checkpoint.saved_count(path) == 0
    save(path, [done(0, 0)])
    assert Checkpoint.saved_count(path) == 1


def old_format(entries) -> bytes:
    frames = []
    for key, fields in entries:
        payload = pickle.dumps((key, fields))
        frames.append(struct.pack("<II", len(payload), zlib.crc32(payload)) + payload)
    return b"pp_notebook checkpoint 1\n" + b"".join(frames)


def unrelated_database(path):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE items (key TEXT PRIMARY KEY, value BLOB)")
    db.execute("INSERT INTO items VALUES ('a', x'00')")
    db.commit()
    db.close()


@pytest.mark.parametrize("write, message", [
    (lambda p: p.write_text("my precious notes\n"), "not a pp_notebook checkpoint: choose another"),
    (unrelated_database, "not a pp_notebook checkpoint: choose another"),
    (lambda p: p.write_bytes(old_format([(hashlib.blake2b(b"k", digest_size=16).hexdigest(),
                                          {"value": 1, "attempts": 1})])),
     "0.1's framed format, which this version does not read: rerun with a new checkpoint path"),
    (lambda p: p.write_bytes(b"pp_notebook checkpoint 1\n"), "0.1's framed format"),
])
def test_a_file_that_is_not_ours_is_refused_and_left_byte_for_byte(tmp_path, write, message):
    path = tmp_path / "run.ckpt"
    write(path)
    before = files(tmp_path)
    for attempt in (lambda: Checkpoint(path), lambda: Checkpoint.saved_count(path)):
        with pytest.raises(ValueError, match=message) as refused:
            attempt()
        assert str(path) in str(refused.value)
        assert files(tmp_path) == before


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot use .* as a checkpoint"):
        Checkpoint(tmp_path)


def test_items_are_named_by_a_stable_hash_or_by_key(tmp_path):
    checkpoint = Checkpoint(tmp_path / "a.ckpt")
    item = ("a", 1, 2.5)
    expected = hashlib.blake2b(pickle.dumps(item, protocol=4), digest_size=16).hexdigest()
    assert checkpoint.key_of(item) == expected == Checkpoint(tmp_path / "b.ckpt").key_of(item)
    keyed = Checkpoint(tmp_path / "c.ckpt", key=lambda d: d["name"])
    assert keyed.key_of({"name": "n1", "tags": {"x", "y"}}) == checkpoint.key_of("n1")
    with pytest.raises(ValueError, match="cannot name its checkpoint entry.*pass key="):
        checkpoint.key_of(threading.Lock())
    for each in (checkpoint, keyed):
        each.close()
