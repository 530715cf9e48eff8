"""The controller killed (SIGKILL) in the middle of a run, on a cluster of its own: the run
ends soon with a clear error on what had not finished, and keeps every finished result."""

import os
import signal
import sys
import time

import cloudpickle
import psutil
import pytest

from pp_notebook.errors import ClusterError
from pp_notebook.options import RunOptions
from pp_notebook.run import Run

from .helpers import alive, dedicated_cluster
from helpers import wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import tests/

TASKS = 40


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
