"""Which engines are told to forget which finished runs, and when (pure bookkeeping: the
requests themselves are tested on a real cluster in tests/cluster/test_cluster.py)."""

import time

from pp_notebook.cluster import finished_runs
from pp_notebook.cluster.finished_runs import FinishedRuns

from helpers import wait_until


def recorder():
    told: list[dict[int, list[str]]] = []

    def tell(keys_by_engine):
        told.append(keys_by_engine)
        return []

    return FinishedRuns(tell), told


def test_a_batch_takes_its_engines_keys_along_once(monkeypatch):
    monkeypatch.setattr(finished_runs, "FORGET_AFTER_S", 60.0)
    runs, told = recorder()
    runs.add(["a"], [0, 1])
    runs.add(["b"], [1])
    assert runs.take(1) == ["a", "b"]
    assert runs.take(1) == [] and runs.take(2) == []
    runs.flush()
    assert told == [{0: ["a"]}]  # engine 1's keys went with its batch
    runs.close()


def test_left_alone_each_engine_is_told_once_its_oldest_keys_have_waited(monkeypatch):
    monkeypatch.setattr(finished_runs, "FORGET_AFTER_S", 0.3)
    runs, told = recorder()
    runs.add(["a"], [0, 1])
    time.sleep(0.2)
    runs.add(["b"], [1, 2])  # a later run does not put engine 0 and 1's turn back
    assert not told
    assert wait_until(lambda: told, 5, interval=0.01)
    assert told[0] == {0: ["a"], 1: ["a", "b"]}
    assert wait_until(lambda: len(told) == 2, 5, interval=0.01)
    assert told[1] == {2: ["b"]}  # its own turn, 0.3 s after its key came
    runs.close()


def test_nothing_to_forget_arms_nothing_and_a_closed_one_tells_nothing(monkeypatch):
    monkeypatch.setattr(finished_runs, "FORGET_AFTER_S", 0.05)
    runs, told = recorder()
    runs.add([], [0])
    runs.add(["a"], [])
    assert runs._timer is None
    runs.add(["b"], [1])
    runs.close()
    runs.add(["c"], [1])
    time.sleep(0.2)
    assert told == [] and runs.take(1) == []
    assert runs.flush() == [] and told == []
