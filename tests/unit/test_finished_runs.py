"""Which engines are told to forget which finished runs, and when (pure bookkeeping: the
requests themselves are tested on a real cluster in tests/cluster/test_cluster.py)."""

import threading

from pp_notebook.cluster import finished_runs
from pp_notebook.cluster.finished_runs import FinishedRuns


def recorder(live=(0, 1, 2)):
    sent: dict[int, list[str]] = {}
    done = threading.Event()

    def send(eid, keys):
        sent[eid] = keys
        done.set()

    return FinishedRuns(send, lambda: live), sent, done


def test_a_batch_takes_its_engines_keys_along_once(monkeypatch):
    monkeypatch.setattr(finished_runs, "FORGET_AFTER_S", 60.0)
    runs, sent, _ = recorder()
    runs.add(["a"], [0, 1])
    runs.add(["b"], [1])
    assert runs.take(1) == ["a", "b"]
    assert runs.take(1) == [] and runs.take(2) == []
    runs.flush()
    assert sent == {0: ["a"]}  # engine 1's keys went with its batch
    runs.close()


def test_left_alone_each_live_engine_is_told_after_the_delay(monkeypatch):
    monkeypatch.setattr(finished_runs, "FORGET_AFTER_S", 0.05)
    runs, sent, done = recorder(live=(0, 2))
    runs.add(["a"], [0, 1, 2])
    assert not sent
    assert done.wait(5)
    runs.close()
    assert sent == {0: ["a"], 2: ["a"]}  # engine 1 has gone: nothing to tell it


def test_a_send_that_fails_stops_no_other_and_a_closed_one_sends_nothing(monkeypatch):
    monkeypatch.setattr(finished_runs, "FORGET_AFTER_S", 60.0)
    told = []

    def send(eid, keys):
        if eid == 0:
            raise RuntimeError("engine gone")
        told.append(eid)

    runs = FinishedRuns(send, lambda: [0, 1])
    runs.add(["a"], [0, 1])
    runs.flush()
    assert told == [1]
    runs.add(["b"], [1])
    runs.close()
    runs.add(["c"], [1])
    runs.flush()
    assert told == [1] and runs.take(1) == []
