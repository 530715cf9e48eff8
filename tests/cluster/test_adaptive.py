"""Adaptive engines: the cluster grows under load, shrinks when idle, and never stops a task."""

import sys
import time

import cloudpickle
import pytest

import pp_notebook as pp
from pp_notebook.views.dashboard import Dashboard

from helpers import ENGINES, wait_until

ITEMS = 120  # 12 s of work for one engine: time enough for a second one to start and help


def spin(x):
    end = time.perf_counter() + 0.1
    while time.perf_counter() < end:
        pass
    return x * x


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import this file


@pytest.fixture
def adaptive(cluster):
    """The session cluster made adaptive between 1 and 2 engines; fixed again afterwards."""
    pp.scale("auto", min_engines=1, max_engines=ENGINES, idle_timeout=1.0)
    yield cluster
    pp.scale(ENGINES)


def test_an_adaptive_cluster_grows_under_load_and_shrinks_back_when_idle(adaptive):
    assert pp.status()["adaptive"] == {"min_engines": 1, "max_engines": ENGINES,
                                       "idle_timeout": 1.0}
    assert wait_until(lambda: len(pp.status()["engines"]) == 1, 30), pp.status()
    run = pp.map(spin, range(ITEMS))
    dashboard = Dashboard(run).start()
    counts, shown = set(), set()
    while not run.wait(0.1):
        counts.add(sum(e.state in ("idle", "busy") for e in run.snapshot().engines))
        shown.add(len(dashboard.widget.engines))  # one row per engine seen
    df = run.result()
    assert run.failure is None, run.failure
    assert (df["status"] == "ok").all(), df[["status", "error"]].value_counts()
    assert list(df["result"]) == [x * x for x in range(ITEMS)]
    assert (df["status"] == "ok").all() and (df["attempts"] == 1).all()
    assert max(counts) == ENGINES and df["engine"].nunique() == ENGINES
    assert max(shown) >= ENGINES  # the engine that joined got its row while the run went on
    dashboard.stop()
    assert wait_until(lambda: len(pp.status()["engines"]) == 1, 30), pp.status()
    states = [e.state for e in run.snapshot().engines]
    assert "dead" not in states and {"left", "retiring"} & set(states)  # retired, not lost


def test_scaling_down_during_a_run_waits_for_the_task_and_loses_nothing(cluster):
    run = pp.map(spin, range(40))
    time.sleep(0.5)
    pp.scale(1)
    assert run.wait(60)
    df = run.result()
    assert list(df["result"]) == [x * x for x in range(40)]
    assert (df["attempts"] == 1).all()  # no task was cut off and run again
    states = [e.state for e in run.snapshot().engines]
    assert "dead" not in states and len(pp.status()["engines"]) == 1
    pp.scale(ENGINES)


@pytest.mark.parametrize("call, message", [
    (lambda: pp.scale("many"), "engines must be a number or 'auto'"),
    (lambda: pp.scale("auto", min_engines=3, max_engines=2), "min_engines <= max_engines"),
    (lambda: pp.scale("auto", idle_timeout=0), "idle_timeout must be a positive"),
])
def test_bad_adaptive_settings_are_refused(cluster, call, message):
    with pytest.raises(ValueError, match=message):
        call()
