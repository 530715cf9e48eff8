"""Failing, hanging and crashing tasks on a real cluster: every other result survives."""

import os
import signal
import sys
import threading
import time

import cloudpickle
import pytest

import pp_notebook as pp
from conftest import engine_pids, wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])


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
def test_a_task_over_its_timeout_is_stopped_and_others_continue(cluster, how):
    start = time.monotonic()
    run = pp.map(lambda x: slow_unless(x, 5, how), range(12), timeout=1.0)
    assert run.wait(60)
    statuses = [r.status for r in run.records]
    assert statuses[5] == "timeout"
    assert statuses.count("ok") == 11
    assert run.records[5].error_type == "TaskTimeout"
    if how == "stubborn":  # it swallows the timeout and the interrupt: its engine is ended
        assert "ended and replaced" in run.records[5].error
        assert run.records[5].duration_s >= 1.0
    else:
        assert run.records[5].duration_s == pytest.approx(1.0, abs=0.7)
    assert time.monotonic() - start < 20


def test_a_task_that_blocks_the_timeout_signal_has_its_engine_replaced(cluster):
    before = set(cluster.live_ids())
    run = pp.map(lambda x: slow_unless(x, 3, "blocked"), range(8), timeout=1.0)
    assert run.wait(60)
    statuses = [r.status for r in run.records]
    assert statuses[3] == "timeout", run.records[3]
    assert "ended and replaced" in run.records[3].error
    assert statuses.count("ok") == 7
    assert wait_until(lambda: len(cluster.live_ids()) == 2, 30)
    assert set(cluster.live_ids()) != before  # a new engine stands in for the ended one


def _kill_engine_soon(cluster, delay):
    pids = engine_pids(cluster)
    victim = min(pids)

    def kill():
        time.sleep(delay)
        os.kill(pids[victim], signal.SIGKILL)

    threading.Thread(target=kill, daemon=True).start()
    return victim


def test_killing_an_engine_from_outside_loses_nothing_even_without_retries(cluster):
    victim = _kill_engine_soon(cluster, 0.8)
    run = pp.map(lambda x: time.sleep(0.3) or x, range(16))
    assert run.wait(90)
    assert [r.status for r in run.records] == ["ok"] * 16, run.errors()
    assert [r.value for r in run.records] == list(range(16))
    # the engine died holding two batches: which one ran is unproven, so nothing was charged
    assert {r.attempts for r in run.records} == {1}
    assert [e.state for e in run.snapshot().engines if e.id == victim] == ["dead"]


@pytest.mark.parametrize("retries", [0, 1])
def test_the_one_task_a_killed_engine_held_is_charged_and_retried(cluster, retries):
    victim = _kill_engine_soon(cluster, 0.8)
    run = pp.map(lambda x: time.sleep(2) or x, range(2), retries=retries)  # one per engine
    assert run.wait(90)
    hit = [r for r in run.records if r.engine == victim or r.attempts == 2 or r.status == "lost"]
    assert len(hit) == 1
    spared = [r for r in run.records if r is not hit[0]]
    assert spared[0].status == "ok" and spared[0].attempts == 1
    if retries:
        assert hit[0].status == "ok" and hit[0].attempts == 2 and hit[0].engine != victim
    else:
        assert hit[0].status == "lost" and f"engine {victim}" in hit[0].error


@pytest.mark.parametrize("retries", [0, 1])
def test_a_task_calling_os_exit_is_lost_alone(cluster, retries):
    def exits(x):
        if x == 7:
            os._exit(3)
        return x

    run = pp.map(exits, range(30), retries=retries)
    assert run.wait(120)
    assert run.records[7].status == "lost"
    assert run.records[7].attempts == retries + 1
    assert "died while running this task" in run.records[7].error
    others = [r for r in run.records if r.task != 7]
    assert all(r.status == "ok" and r.value == r.task for r in others)


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


def test_keyboard_interrupt_during_wait_cancels_the_run(cluster):
    run = pp.map(lambda x: time.sleep(0.2) or x, range(100))
    assert wait_until(lambda: run.snapshot().counts.get("ok", 0) >= 2, 30)
    import _thread
    threading.Timer(0.2, _thread.interrupt_main).start()
    with pytest.raises(KeyboardInterrupt):
        run.wait()
    assert run.done
    counts = run.snapshot().counts
    assert counts.get("ok", 0) >= 2 and counts.get("cancelled", 0) > 0
    assert counts.get("pending", 0) == 0
