"""Tasks that run over their time limit, however they resist: stopped, and nothing else lost."""

import sys
import time

import cloudpickle
import pytest

import pp_notebook as pp

from helpers import wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import tests/


def slow_unless(x, hang_on, how):
    import time as _time
    if x == hang_on:
        if how == "loop":
            while True:
                pass
        if how == "sleep":
            _time.sleep(600)
        if how == "stubborn":  # catches the timeout and goes on
            while True:
                try:
                    _time.sleep(600)
                except BaseException:
                    pass
        if how == "blocked":  # blocks the signals the engine would use to stop it
            import signal as _signal
            _signal.pthread_sigmask(_signal.SIG_BLOCK, {_signal.SIGALRM, _signal.SIGINT})
            _time.sleep(600)
    _time.sleep(0.05)
    return x


@pytest.mark.parametrize("how", ["loop", "sleep", "stubborn"])
def test_a_task_over_its_timeout_is_stopped_and_others_continue(cluster, how, fault_figures):
    start = time.monotonic()
    run = pp.map(lambda x: slow_unless(x, 5, how), range(12), timeout=1.0)
    assert run.wait(60)
    statuses = [r.status for r in run.records]
    fault_figures(f"timeout 1 s ({how}): overrun", run.records[5].duration_s - 1.0,
                  sum(s != "ok" for i, s in enumerate(statuses) if i != 5), statuses[5])
    assert statuses[5] == "timeout"
    assert statuses.count("ok") == 11
    assert [r.value for r in run.records if r.task != 5] == [x for x in range(12) if x != 5]
    assert run.records[5].error_type == "TaskTimeout"
    if how == "stubborn":  # it swallows the timeout and the interrupt: its engine is ended
        assert "ended and replaced" in run.records[5].error
        assert run.records[5].duration_s >= 1.0
    else:
        assert run.records[5].duration_s == pytest.approx(1.0, abs=0.7)
    assert time.monotonic() - start < 20


def test_a_task_that_blocks_the_timeout_signal_has_its_engine_replaced(cluster, fault_figures):
    before = set(cluster.live_ids())
    run = pp.map(lambda x: slow_unless(x, 3, "blocked"), range(8), timeout=1.0)
    assert run.wait(60)
    statuses = [r.status for r in run.records]
    fault_figures("timeout 1 s (signals blocked): overrun", run.records[3].duration_s - 1.0,
                  sum(s != "ok" for i, s in enumerate(statuses) if i != 3), statuses[3])
    assert statuses[3] == "timeout", run.records[3]
    assert "ended and replaced" in run.records[3].error
    assert statuses.count("ok") == 7
    assert wait_until(lambda: len(cluster.live_ids()) == 2, 30)
    assert set(cluster.live_ids()) != before  # a new engine stands in for the ended one


def test_a_thread_blocked_past_its_timeout_costs_one_engine_and_charges_only_its_item(
        cluster, fault_figures):
    """With concurrency=2 a batch runs two items at once: the engine names the one whose
    thread is blocked (in C, where no exception reaches it) past its limit, so the engine the
    client ends is charged to that item alone, and the others run again uncharged."""
    before = set(cluster.live_ids())
    run = pp.map(lambda x: slow_unless(x, 1, "sleep"), range(12), timeout=1.0, concurrency=2)
    assert run.wait(60)
    statuses = [r.status for r in run.records]
    dead = [e.id for e in run.snapshot().engines if e.state == "dead"]
    fault_figures("timeout 1 s (thread blocked, concurrency 2)", run.records[1].duration_s - 1.0,
                  sum(s != "ok" for i, s in enumerate(statuses) if i != 1),
                  f"{len(dead)} engine(s) ended")
    assert statuses[1] == "timeout", run.records[1]
    assert "ended and replaced" in run.records[1].error
    assert run.records[1].attempts == 1
    assert statuses.count("ok") == 11
    assert [r.value for r in run.records if r.task != 1] == [x for x in range(12) if x != 1]
    assert all(r.attempts == 1 for r in run.records), [r.attempts for r in run.records]
    assert len(dead) == 1, dead
    assert len(before - set(cluster.live_ids())) == 1
