"""The controller killed (SIGKILL) in the middle of a run, on a cluster of its own or on one
started elsewhere and joined with `connect`: the run ends soon with a clear error on what had
not finished, and keeps every finished result."""

import os
import signal
import sys
import threading
import time

import cloudpickle
import ipyparallel as ipp
import psutil
import pytest

import pp_notebook as pp
from pp_notebook import cluster as cluster_module
from pp_notebook.cluster.files import cluster_files, remove_files
from pp_notebook.cluster.handle import controller_args
from pp_notebook.errors import ClusterError
from pp_notebook.magic import cluster_status_text
from pp_notebook.options import RunOptions
from pp_notebook.run import Run

from .helpers import alive, dedicated_cluster, kill_all, process_tree
from helpers import wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import tests/

TASKS = 40
LONG_RUN_TASKS = 120
"""Enough work left at the kill (about 11 s on 2 engines) that a run which did not notice the
controller's death would outlast the 5 s it has: a killed controller's schedulers live on and
still pass tasks to the engines, though no engine's death would be reported any more."""


def triple(x):
    import time as _time
    _time.sleep(0.2)
    return {"x": x, "triple": 3 * x}


@pytest.fixture(scope="module")
def controller_killed(fault_figures):
    """Kill the controller of a dedicated cluster mid-run; what became of the run, and of
    the cluster's processes once it was shut down."""
    with dedicated_cluster(2) as handle:
        controller = handle.controller_pid
        run = Run(triple, range(TASKS), RunOptions()).start(handle)
        assert wait_until(lambda: run.snapshot().counts.get("ok", 0) >= 6, 60)
        os.kill(controller, signal.SIGKILL)
        killed = time.monotonic()
        finished = {r.task: r.value for r in run.records if r.status == "ok"}
        ended = run.wait(60)
        ended_s = time.monotonic() - killed
        started = time.monotonic()
        handle.shutdown()
        shutdown_s = time.monotonic() - started
        psutil.wait_procs(alive(handle.started_processes), timeout=10)
        leftovers = [(p.pid, " ".join(p.cmdline()[-4:])) for p in alive(handle.started_processes)]
        frame = run.result()
        kept = sum(frame.loc[[t], "triple"].tolist() == [3 * t] for t in finished)
        fault_figures("controller SIGKILL mid-run", ended_s if ended else None,
                      len(finished) - kept,
                      f"{len(finished)} finished before, "
                      f"{run.snapshot().counts.get('lost', 0)} lost; "
                      f"{len(leftovers)} processes outlived shutdown")
        yield {"run": run, "finished": finished, "ended": ended, "ended_s": ended_s,
               "shutdown_s": shutdown_s, "leftovers": leftovers, "controller": controller}


def test_the_run_ends_soon_with_a_clear_error_and_keeps_finished_results(controller_killed):
    run, finished = controller_killed["run"], controller_killed["finished"]
    assert controller_killed["ended"] and controller_killed["ended_s"] < 15
    assert len(finished) >= 6
    frame = run.result()
    assert list(frame.index) == list(range(TASKS))
    for task, value in finished.items():
        assert run.records[task].status == "ok" and run.records[task].value == value
        assert frame.loc[task, "triple"] == 3 * task and frame.loc[task, "status"] == "ok"
    statuses = {r.status for r in run.records}
    assert statuses <= {"ok", "lost"} and "lost" in statuses
    for record in run.records:
        if record.status == "lost":
            assert record.error_type == "RunStopped"
            assert f"controller (pid {controller_killed['controller']}) stopped" in record.error
            assert "pp_notebook.start()" in record.error  # what to do next
    assert isinstance(run.failure, ClusterError)
    errors = run.errors()
    assert len(errors) == sum(r.status == "lost" for r in run.records)
    assert controller_killed["shutdown_s"] < 15


def test_no_process_of_the_cluster_outlives_its_shutdown(controller_killed):
    """The controller's scheduler processes are re-parented to init when it is killed: the
    shutdown must still end them (and the engines and their nannies)."""
    assert controller_killed["leftovers"] == []


@pytest.fixture(scope="module")
def connected_controller_killed(request, fault_figures):
    """A cluster started apart (its controller and engines are not this process's handle's:
    it knows no pid of theirs), joined with `pp.connect`; its controller is killed mid-run.
    The session's cluster is set aside meanwhile, and every process of the foreign cluster is
    ended at the end (its schedulers outlive a killed controller)."""
    cluster_id = f"pp-test-controller-{os.getpid()}"
    foreign = ipp.Cluster(n=2, cluster_id=cluster_id, delay=0, log_level=40,
                          controller_args=controller_args(2))
    processes: list[psutil.Process] = []
    saved = cluster_module.swap(None)  # connect() would stop the session's cluster

    def finish():
        mine = cluster_module.swap(saved)
        if mine is not None:
            mine.shutdown()
        try:
            foreign.stop_cluster_sync()
        except Exception:  # its controller is dead: the engines' launchers still stop
            pass
        psutil.wait_procs(alive(processes), timeout=10)
        kill_all(processes)
        remove_files(cluster_files(foreign.profile_dir, cluster_id))  # a killed one leaves them

    request.addfinalizer(finish)
    foreign.start_cluster_sync()
    foreign.connect_client_sync().wait_for_engines(2, timeout=60)
    pp.connect(cluster_id=cluster_id)
    handle = cluster_module.current(start_if_missing=False)
    assert not handle.owned and handle.controller_pid is None
    processes += process_tree(foreign.controller.process.pid)
    processes += [p for info in handle.engines.values() for p in process_tree(info.pid)]
    run = Run(triple, range(LONG_RUN_TASKS), RunOptions()).start(handle)
    assert wait_until(lambda: run.snapshot().counts.get("ok", 0) >= 6, 60)
    os.kill(foreign.controller.process.pid, signal.SIGKILL)
    killed = time.monotonic()
    finished = {r.task: r.value for r in run.records if r.status == "ok"}
    ended = run.wait(60)
    ended_s = time.monotonic() - killed
    try:
        cluster_module.current(start_if_missing=False)
        refused = None
    except ClusterError as exc:
        refused = str(exc)
    statuses: list[dict] = []  # pp.status() must answer: a dead controller answers no query
    asking = threading.Thread(target=lambda: statuses.append(pp.status()), daemon=True)
    asking.start()
    asking.join(10)
    fault_figures("connected controller SIGKILL mid-run", ended_s if ended else None,
                  sum(run.records[t].status != "ok" for t in finished),
                  f"{len(finished)} finished before, {run.snapshot().counts.get('lost', 0)} lost")
    return {"run": run, "finished": finished, "ended": ended, "ended_s": ended_s,
            "cluster_id": cluster_id, "refused": refused, "statuses": statuses}


def test_a_connected_clusters_dead_controller_ends_the_run_within_5_s(
        connected_controller_killed):
    facts = connected_controller_killed
    run, finished = facts["run"], facts["finished"]
    assert facts["ended"] and facts["ended_s"] < 5, facts["ended_s"]
    assert len(finished) >= 6
    for task, value in finished.items():
        assert run.records[task].status == "ok" and run.records[task].value == value
    lost = [r for r in run.records if r.status != "ok"]
    assert lost and all(r.status == "lost" for r in lost)
    for record in lost:
        assert record.error_type == "RunStopped"
        assert f"controller of cluster {facts['cluster_id']!r}" in record.error
        assert "went away" in record.error and "pp_notebook.connect()" in record.error
    assert isinstance(run.failure, ClusterError)


def test_a_connected_cluster_whose_controller_died_is_refused_not_replaced(
        connected_controller_killed):
    refused = connected_controller_killed["refused"]
    assert refused is not None and "went away" in refused and "pp_notebook.start()" in refused


def test_status_says_a_connected_clusters_controller_went_away(connected_controller_killed):
    statuses = connected_controller_killed["statuses"]
    assert statuses, "pp.status() did not answer within 10 s"
    assert statuses[0]["running"] is False and "went away" in statuses[0]["lost"]
    text = cluster_status_text(statuses[0])
    assert "went away" in text and "%pp connect" in text and "%pp start" in text


def engine_processes() -> set[psutil.Process]:
    """The engines (and nannies) this test process has started that still run."""
    found = set()
    for process in alive(psutil.Process().children(recursive=True)):
        try:
            if "pp_notebook.engine_app" in " ".join(process.cmdline()):
                found.add(process)
        except psutil.Error:  # it has just ended
            pass
    return found


def test_stopping_the_cluster_mid_run_ends_the_run_and_starts_no_engine():
    """`pp.stop()` (here the handle's shutdown) while a run is in flight: its engines end,
    and that is no engine death to replace. The rest of the run ends as lost, saying that
    the cluster was stopped; what had finished is kept, and no engine outlives the stop (a
    replacement started into the stopped cluster waited 120 s for its connection file)."""
    others = engine_processes()  # another test's cluster may be running
    with dedicated_cluster(2) as handle:
        run = Run(triple, range(TASKS), RunOptions()).start(handle)
        assert wait_until(lambda: run.snapshot().counts.get("ok", 0) >= 4, 60)
        handle.shutdown()
        assert run.wait(15)
        finished = {r.task: r.value for r in run.records if r.status == "ok"}
        lost = [r for r in run.records if r.status != "ok"]
        assert len(finished) >= 4 and lost and all(r.status == "lost" for r in lost)
        assert all("the cluster was stopped" in r.error for r in lost), lost[0].error
        assert isinstance(run.failure, ClusterError)
        assert all(value == {"x": t, "triple": 3 * t} for t, value in finished.items())
        time.sleep(1)  # a replacement would be launched by now
        assert engine_processes() - others == set()
        with pytest.raises(ClusterError, match="stopped"):
            handle.add_engines(1)
