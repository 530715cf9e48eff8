"""The shared store and the engine's side of it, in one process: fingerprints, the size limit,
segment files mapped read-only, and fresh wrappers per task."""

import io
import pickle

import cloudpickle
import numpy as np
import pandas as pd
import pytest

from pp_notebook import engine
from pp_notebook import store as store_module
from pp_notebook.shipping import dumps
from pp_notebook.store import SHARE_THRESHOLD_BYTES, SharedStore


def frame(rows: int = 200_000) -> pd.DataFrame:
    return pd.DataFrame({"g": np.arange(rows) % 40, "x": np.linspace(0, 1, rows),
                         "name": ["row"] * rows})


def test_only_big_numeric_values_or_marked_ones_are_shared():
    store = SharedStore()
    big, small = frame(), frame(10)
    assert store.wants(big) and store.wants(np.zeros(SHARE_THRESHOLD_BYTES // 8))
    assert not store.wants(small) and not store.wants(list(range(10**6)))
    assert store.wants(store.mark(small))


def test_an_unchanged_value_keeps_its_fingerprint_and_a_change_in_place_gets_a_new_one():
    store, data = SharedStore(), frame()
    first = store.add(data, "data")
    assert store.add(data, "data") is first
    assert store.add(data.copy(), "data") is first  # equal content: the same value
    data.loc[5, "x"] = -1.0
    changed = store.add(data, "data")
    assert changed is not first and changed.digest != first.digest


def test_a_fingerprint_covers_every_piece_of_a_buffer_crcd_on_several_threads(monkeypatch):
    """The buffers are CRC'd in pieces across the cores: a change in any piece, or two
    pieces swapped, is a new fingerprint; the same bytes keep theirs."""
    monkeypatch.setattr(store_module, "CRC_CHUNK_BYTES", 1024)
    values = np.arange(4096, dtype=np.float64)  # 32 pieces

    def digest(array: np.ndarray) -> str:
        buffers: list[pickle.PickleBuffer] = []
        inband = pickle.dumps(array, protocol=5, buffer_callback=buffers.append)
        return store_module._fingerprint(inband, buffers)

    first = digest(values)
    assert digest(values.copy()) == first
    for changed_at in (0, 2000, 4095):
        changed = values.copy()
        changed[changed_at] = -1.0
        assert digest(changed) != first
    swapped = values.copy()
    swapped[:128], swapped[128:256] = values[128:256], values[:128]  # pieces 0 and 1
    assert digest(swapped) != first


def test_the_store_drops_the_least_recently_used_values_beyond_its_limit():
    one, two, three = (np.full(200_000, value) for value in (1.0, 2.0, 3.0))
    store = SharedStore(limit_bytes=3_500_000)
    a, b = store.add(one, "one"), store.add(two, "two")
    store.add(one, "one")  # used again: now the most recent
    store.add(three, "three")
    assert store.take_dropped() == [b] and store.take_dropped() == []
    assert [v.name for v in store.values()] == ["one", "three"] and a in store.values()
    assert {v.name for v in store.clear()} == {"one", "three"} and store.values() == []


@pytest.fixture
def shm(tmp_path, monkeypatch):
    """The engine's /dev/shm, in a temporary folder; nothing of the engine's state kept."""
    monkeypatch.setattr(engine, "SHM_DIR", str(tmp_path))
    monkeypatch.setattr(engine, "_shared", {})
    monkeypatch.setattr(engine, "_written", set())
    return tmp_path


def write(value, segment: str) -> None:
    buffers: list = []
    inband = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    engine.write_segment(segment, inband, [b.raw() for b in buffers], remove_at_exit=True)


def test_a_segment_loads_numeric_data_in_place_read_only_and_once_per_engine(shm):
    data = frame()
    write(data, "pp_notebook-c1-abc")
    loaded = engine._load_segment("pp_notebook-c1-abc")
    pd.testing.assert_frame_equal(loaded, data)
    assert not loaded["x"].to_numpy().flags.writeable  # the read-only mapping itself
    assert engine._load_segment("pp_notebook-c1-abc") is loaded
    with pytest.raises(ValueError, match="read-only"):
        loaded["x"].to_numpy()[0] = 5.0
    engine.drop_segments(["pp_notebook-c1-abc"], unlink=True)
    assert not (shm / "pp_notebook-c1-abc").exists()


def test_a_payload_references_shared_values_and_each_task_gets_a_fresh_wrapper(shm):
    data, digest = frame(), "d1"
    write(data, f"pp_notebook-{digest}")

    scope = {"data": data}
    exec("def task(k):\n"
         "    data['x'] += 1  # in place: on this task's wrapper only\n"
         "    data.sort_values('g', inplace=True, ascending=False)\n"
         "    return float(data['x'].min())\n", scope)
    task_fn = scope["task"]
    payload = dumps((task_fn, None), share=lambda value: digest if value is data else None)
    assert len(payload) < 2000  # the frame stayed out of the pickle
    unpickler = engine._SharedUnpickler(io.BytesIO(payload))
    fn, _ = unpickler.load()
    slots = engine._slots(fn, unpickler.loaded)
    assert len(slots) == 1
    results = []
    for k in range(3):
        engine._refresh(slots)
        results.append(fn(k))
    assert results == [1.0, 1.0, 1.0]  # no task saw another task's change
    assert float(unpickler.loaded[0]["x"].iloc[0]) == 0.0


def test_a_function_pickled_without_sharing_carries_the_value():
    data = frame()
    payload = cloudpickle.dumps(lambda: data)
    assert len(payload) > data["x"].nbytes
