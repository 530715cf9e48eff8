"""Fifty runs in a row on one cluster: the client's and the controller's memory stay flat."""

import gc
import os
import sys

import cloudpickle

import pp_notebook as pp

from .helpers import process_tree, rss_mb

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import tests/

RUNS, WARM_UP, TASKS = 50, 5, 40
GROWTH_MB = 30


def row(x):
    return {"x": x, "text": "z" * 1000, "values": list(range(50))}


def test_fifty_runs_in_a_row_keep_memory_bounded(cluster, fault_figures):
    controller = cluster.controller_pid
    figures = {}
    history_before = len(cluster.client.history)  # earlier tests' own requests
    for i in range(RUNS):
        run = pp.map(row, range(TASKS))
        assert run.wait(60)
        frame = run.result()
        assert list(frame["x"]) == list(range(TASKS)) and set(frame["status"]) == {"ok"}
        del run, frame
        if i + 1 in (WARM_UP, RUNS):
            gc.collect()
            figures[i + 1] = (rss_mb([os.getpid()]),
                              rss_mb([p.pid for p in process_tree(controller)]))
    (client0, ctl0), (client1, ctl1) = figures[WARM_UP], figures[RUNS]
    outcome = (f"client RSS {client0:.0f} -> {client1:.0f} MB, controller (with schedulers) "
               f"{ctl0:.0f} -> {ctl1:.0f} MB over runs {WARM_UP}..{RUNS}")
    print(outcome)
    fault_figures(f"{RUNS} runs in a row", None, 0, outcome)
    assert client1 - client0 < GROWTH_MB, outcome
    assert ctl1 - ctl0 < GROWTH_MB, outcome
    history = len(cluster.client.history) - history_before
    assert history < 10 * TASKS, f"the client kept {history} messages of finished runs"
