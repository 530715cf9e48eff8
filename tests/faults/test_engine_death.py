"""Engines that die or freeze under a task: killed from outside, os._exit, a segfault, SIGSTOP,
and a task that allocates without end. Every other task's result survives, and the figures
say how soon the run noticed."""

import os
import signal
import sys
import time

import cloudpickle
import pytest

import pp_notebook as pp
from pp_notebook.engine import leftovers

from .helpers import engine_dead, read_marker, time_until, wrong_results
from helpers import engine_pids, pid_alive, wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import tests/


def nap(x, seconds):
    import time as _time
    _time.sleep(seconds)
    return x


def crash_on(x, victim, how, marker):
    """Item `victim` stamps `marker` with its time and pid, then takes its engine down."""
    import ctypes
    import os as _os
    import time as _time
    if x == victim:
        with open(marker + ".tmp", "w") as f:
            f.write(f"{_time.time()} {_os.getpid()}")
        _os.replace(marker + ".tmp", marker)
        if how == "os._exit(1)":
            _os._exit(1)
        if how == "segfault":
            ctypes.string_at(0)
        if how == "allocate":
            chunks = []
            while True:
                chunks.append(bytearray(10_000_000))
    _time.sleep(0.05)
    return x * 10


def test_killing_an_engine_from_outside_loses_nothing_even_without_retries(cluster,
                                                                           fault_figures):
    pids = engine_pids(cluster)
    victim = min(pids)
    run = pp.map(lambda x: nap(x, 0.3), range(16))
    assert wait_until(lambda: run.snapshot().counts.get("ok", 0) >= 2, 30)  # mid-task
    os.kill(pids[victim], signal.SIGKILL)
    detect_s = time_until(lambda: engine_dead(run, eid=victim), 30)
    assert run.wait(90)
    lost = wrong_results(run.records, {x: x for x in range(16)})
    fault_figures("engine SIGKILL (outside)", detect_s, lost, "its tasks requeued")
    assert detect_s is not None, "the run never noticed the dead engine"
    assert lost == 0, run.errors()
    # the engine died holding two batches: which one ran is unproven, so nothing was charged
    assert {r.attempts for r in run.records} == {1}
    assert [e.state for e in run.snapshot().engines if e.id == victim] == ["dead"]


def _kill_engine_soon(cluster, delay):
    import threading
    pids = engine_pids(cluster)
    victim = min(pids)

    def kill():
        time.sleep(delay)
        os.kill(pids[victim], signal.SIGKILL)

    threading.Thread(target=kill, daemon=True).start()
    return victim


@pytest.mark.parametrize("retries", [0, 1])
def test_the_one_task_a_killed_engine_held_is_charged_and_retried(cluster, retries):
    victim = _kill_engine_soon(cluster, 0.8)
    run = pp.map(lambda x: time.sleep(2) or x, range(2), retries=retries)  # one per engine
    assert run.wait(90)
    hit = [r for r in run.records if r.engine == victim or r.attempts == 2 or r.status == "lost"]
    assert len(hit) == 1
    spared = [r for r in run.records if r.task != hit[0].task]
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


@pytest.mark.parametrize("how", ["os._exit(1)", "segfault"])
def test_a_task_that_takes_its_engine_down_is_lost_alone(cluster, how, tmp_path,
                                                         fault_figures):
    marker = str(tmp_path / "fault")
    run = pp.map(lambda x: crash_on(x, 5, how, marker), range(20))
    injected, pid = read_marker(tmp_path / "fault")
    noticed = time_until(lambda: engine_dead(run, pid=pid), 30)
    detect_s = None if noticed is None else time.time() - injected
    assert run.wait(90)
    lost = wrong_results(run.records, {x: x * 10 for x in range(20) if x != 5})
    fault_figures(f"task {how}", detect_s, lost, run.records[5].status)
    assert noticed is not None, "the run never noticed the engine's death"
    assert lost == 0, run.errors()
    record = run.records[5]
    assert record.status == "lost" and record.error_type == "EngineDied", record
    # it ran again alone after the first death (which could not name it), and died again
    _, last_pid = read_marker(tmp_path / "fault")
    assert "died while running this task" in record.error and f"pid {last_pid}" in record.error
    assert not pid_alive(pid) and not pid_alive(last_pid)


def test_a_frozen_engine_has_its_task_moved_to_another(cluster, fault_figures):
    pids = engine_pids(cluster)
    victim = min(pids)
    # batch=1: the frozen engine held one item, so the client can charge it (a batch of
    # several would run again item by item, uncharged, until a death names its culprit)
    run = pp.map(lambda x: nap(x, 0.3), range(20), timeout=2.0, retries=1, batch=1)
    assert wait_until(lambda: any(e.id == victim and e.state == "busy"
                                  for e in run.snapshot().engines), 30)
    os.kill(pids[victim], signal.SIGSTOP)
    try:
        detect_s = time_until(lambda: engine_dead(run, eid=victim), 60)
        assert run.wait(90)
        lost = wrong_results(run.records, {x: x for x in range(20)})
        moved = [r for r in run.records if r.attempts == 2]
        fault_figures("engine SIGSTOP (timeout 2 s)", detect_s, lost,
                      f"{len(moved)} task moved, engine ended")
        assert detect_s is not None, "the frozen engine was never given up"
        assert lost == 0, run.errors()
        assert len(moved) == 1 and moved[0].engine != victim, run.records
        # a frozen engine is ended, not left stopped (it would hold its memory forever)
        assert wait_until(lambda: not pid_alive(pids[victim]), 10)
    finally:
        try:
            os.kill(pids[victim], signal.SIGCONT)  # the library's SIGKILL may not have come
            if pids[victim] not in engine_pids(cluster).values():
                os.kill(pids[victim], signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_task_over_its_memory_limit_ends_as_memory_and_its_engine_lives_on(
        cluster, tmp_path, fault_figures):
    pids = set(engine_pids(cluster).values())
    limits = {s["pid"]: s["rlimit_as"]
              for s in cluster.client[cluster.live_ids()].apply_sync(leftovers)}
    marker = str(tmp_path / "fault")
    run = pp.map(lambda x: crash_on(x, 3, "allocate", marker), range(12), memory_limit="300MB")
    injected, pid = read_marker(tmp_path / "fault")
    noticed = time_until(lambda: run.records[3].status != "pending", 60)
    detect_s = None if noticed is None else time.time() - injected
    assert run.wait(60)
    lost = wrong_results(run.records, {x: x * 10 for x in range(12) if x != 3})
    fault_figures("task allocates (limit 300MB)", detect_s, lost, run.records[3].status)
    assert lost == 0, run.errors()
    record = run.records[3]
    assert record.status == "memory", record
    assert record.error_type == "MemoryError" and "300 MB" in record.error, record.error
    assert record.attempts == 1 and record.pid == pid
    # the engine lives on, with its usual limits: a big allocation without a limit succeeds
    assert set(engine_pids(cluster).values()) == pids and pid_alive(pid)
    states = cluster.client[cluster.live_ids()].apply_sync(leftovers)
    assert {s["pid"] for s in states} == pids
    for state in states:
        assert state["rlimit_as"] == limits[state["pid"]], state  # the cap was lifted
        assert state["stdout"] != "_CappedOutput" and not state["armed"], state
    again = pp.map(lambda x: len(bytearray(400_000_000)) + x, range(4), batch=1)
    assert again.wait(60)
    assert [r.value for r in again.records] == [400_000_000 + x for x in range(4)], again.errors()
