"""A Run before it is started: built from items without a cluster, readable at once."""

import threading

import pytest

from pp_notebook.options import RunOptions
from pp_notebook.records import item_label
from pp_notebook.run import Run


def test_a_built_run_lists_its_items_as_pending_rows():
    run = Run(lambda x: x * 2, (i for i in range(4)), RunOptions(), labels=item_label)
    frame = run.result(wait=False)
    assert list(frame.index) == [0, 1, 2, 3] and list(frame["item"]) == [0, 1, 2, 3]
    assert set(frame["status"]) == {"pending"} and run.cluster is None and not run.done
    snap = run.snapshot()
    assert (snap.total, snap.finished, snap.engines) == (4, 0, ())


def test_waiting_on_a_run_that_does_not_end_raises_timeout_error():
    run = Run(len, ["ab"], RunOptions())
    with pytest.raises(TimeoutError, match="did not end within 0.05 s.*result\\(wait=False\\)"):
        run.result(timeout=0.05)
    with pytest.raises(TimeoutError):
        run.errors(timeout=0.05)
    assert run.wait(0.05) is False


def test_items_that_are_not_iterable_and_tasks_that_are_not_callable_are_refused():
    with pytest.raises(TypeError, match="items must be iterable"):
        Run(len, 5)
    with pytest.raises(TypeError, match="fn must be callable"):
        Run(5, [1])


def test_a_task_capturing_a_lock_is_refused_naming_it():
    guard = threading.Lock()
    with pytest.raises(TypeError, match="`guard` \\(captured by .*lambda.*threading primitive"):
        Run(lambda x: guard, [1])


def test_each_run_has_its_own_key():
    assert Run(len, []).key != Run(len, []).key
