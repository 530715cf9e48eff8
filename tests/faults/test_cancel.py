"""A cancelled run (run.cancel() or the stop button) keeps what finished, leaves nothing
behind on the engines, and the next run on the same cluster gets only its own results."""

import _thread
import sys
import threading
import time

import cloudpickle
import pytest

import pp_notebook as pp
from pp_notebook.engine import leftovers

from .helpers import wrong_results
from helpers import held_runs, wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import tests/


def first_task(x):
    import time as _time
    _time.sleep(0.2)
    return ("first", x)


def second_task(x):
    import time as _time
    _time.sleep(0.01)
    return ("second", x)


def test_cancel_keeps_finished_results_and_the_cluster_stays_usable(cluster):
    run = pp.map(lambda x: time.sleep(0.2) or x, range(100))
    assert wait_until(lambda: run.snapshot().counts.get("ok", 0) >= 4, 30)
    run.cancel()
    assert run.wait(15)
    counts = run.snapshot().counts
    assert counts.get("ok", 0) >= 4 and counts.get("cancelled", 0) >= 50
    assert counts.get("pending", 0) == 0
    assert all(r.value == r.task for r in run.records if r.status == "ok")
    again = pp.map(lambda x: -x, range(10))
    assert again.wait(30)
    assert [r.value for r in again.records] == [-x for x in range(10)]


def test_a_cancel_that_comes_before_the_engines_start_still_stops_them_at_once(cluster):
    """An engine ignores SIGINT between two requests: the cancel also aborts the batch it
    means to interrupt, so an engine that had not started it skips it, rather than the run
    waiting for the grace and ending the engine."""
    pids = sorted(e["pid"] for e in pp.status()["engines"])
    for _ in range(3):
        # Each engine is busy with another request: the cancel's first interrupt ends that
        # one, and the run's batch, queued behind it, starts after.
        busy = cluster.client[cluster.live_ids()].apply_async(time.sleep, 0.5)
        run = pp.map(lambda x: time.sleep(30) or x, range(4))
        assert wait_until(lambda: all(e.running_task is not None
                                      for e in run.snapshot().engines), 10)  # sent
        started = time.monotonic()
        run.cancel()
        assert run.wait(15)
        ended_after = time.monotonic() - started
        busy.wait(5)
        assert ended_after < 2, f"the run ended {ended_after:.1f} s after the cancel"
        assert {k: n for k, n in run.snapshot().counts.items() if n} == {"cancelled": 4}
        assert sorted(e["pid"] for e in pp.status()["engines"]) == pids  # none was ended


def test_keyboard_interrupt_during_wait_cancels_the_run(cluster):
    run = pp.map(lambda x: time.sleep(0.2) or x, range(100))
    assert wait_until(lambda: run.snapshot().counts.get("ok", 0) >= 2, 30)
    threading.Timer(0.2, _thread.interrupt_main).start()
    with pytest.raises(KeyboardInterrupt):
        run.wait()
    assert run.done
    counts = run.snapshot().counts
    assert counts.get("ok", 0) >= 2 and counts.get("cancelled", 0) > 0
    assert counts.get("pending", 0) == 0


@pytest.mark.parametrize("how", ["run.cancel()", "KeyboardInterrupt"])
def test_the_run_after_a_cancel_gets_only_its_own_results(cluster, how, fault_figures):
    first = pp.map(first_task, range(60))
    assert wait_until(lambda: first.snapshot().counts.get("ok", 0) >= 4, 30)
    started = time.monotonic()
    if how == "run.cancel()":
        first.cancel()
        assert first.wait(30)
    else:
        threading.Timer(0.05, _thread.interrupt_main).start()
        with pytest.raises(KeyboardInterrupt):
            first.wait()
    stopped_s = time.monotonic() - started
    assert first.done
    kept = {r.task: (r.status, r.value) for r in first.records}
    finished = {task: value for task, (status, value) in kept.items() if status == "ok"}

    second = pp.map(second_task, range(100, 140))  # started at once, on the same engines
    assert second.wait(60)
    lost = wrong_results(second.records, {x - 100: ("second", x) for x in range(100, 140)})
    fault_figures(f"cancel ({how}): stop s", stopped_s, lost,
                  f"{len(finished)} kept, {first.snapshot().counts.get('cancelled', 0)} "
                  "cancelled; next run clean")
    assert lost == 0, second.errors()
    assert all(r.attempts == 1 for r in second.records)
    # what the first run finished is kept, right, and no late reply changed it afterwards
    assert len(finished) >= 4 and all(value == ("first", t) for t, value in finished.items())
    assert {r.task: (r.status, r.value) for r in first.records} == kept
    assert {s for s, _ in kept.values()} == {"ok", "cancelled"}
    assert stopped_s < 15
    # nothing left behind: no queued work, no armed timer, both runs' functions forgotten
    client = cluster.client
    # (the controller keeps reporting the last queue of engines that died in earlier tests:
    # only the registered ones count)
    assert wait_until(lambda: all(q.get("queue", 0) + q.get("tasks", 0) == 0
                                  for e, q in client.queue_status().items()
                                  if e in client.ids), 10), client.queue_status()
    assert wait_until(lambda: not any(runs & {first.key, second.key}
                                      for runs in held_runs(cluster)), 10, interval=0.1)
    for state in client[cluster.live_ids()].apply_sync(leftovers):
        assert state["limited_threads"] == 0 and not state["armed"], state
        assert state["itimer"] == (0.0, 0.0) and state["stdout"] != "_CappedOutput", state
    assert not (first.message_ids | second.message_ids) & set(client.history)
    assert not (first.message_ids | second.message_ids) & set(client.outstanding)
