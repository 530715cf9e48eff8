"""The parallel map on a real local cluster: isolation, merging, batching, bad input."""

import _thread
import sys
import threading

import cloudpickle
import pandas as pd
import pytest

import pp_notebook as pp

from helpers import wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import tests/


def square_or_fail(x):
    if x % 5 == 3:
        raise ValueError(f"item {x} is bad")
    return {"x": x, "y": x * x}


def test_results_come_back_in_input_order_with_metadata(cluster):
    run = pp.map(square_or_fail, range(20))
    assert run.wait(60)
    df = run.result()
    assert list(df.index) == list(range(20)) and df.index.name == "task"
    ok = df[df.status == "ok"]
    assert list(ok["y"]) == [x * x for x in ok["x"]]
    assert set(df["engine"].dropna()) <= set(cluster.live_ids()) | {0, 1}
    assert (df["duration_s"] >= 0).all()
    assert list(df.columns) == ["item", "x", "y", "status", "engine", "host", "duration_s",
                                "attempts", "error"]


def test_a_failing_item_keeps_its_error_and_its_neighbours_results(cluster):
    run = pp.map(square_or_fail, range(20))
    run.wait(60)
    df = run.result()
    failed = df[df.status == "error"]
    assert list(failed.index) == [3, 8, 13, 18]
    assert failed["error"].iloc[0] == "ValueError: item 3 is bad"
    assert (df[df.status == "ok"]["y"].notna()).all() and len(df[df.status == "ok"]) == 16
    errors = run.errors()
    assert list(errors["item"]) == [3, 8, 13, 18]
    assert "in square_or_fail" in errors["traceback"].iloc[0]
    assert "raise ValueError" in errors["traceback"].iloc[0]
    assert "run_batch" not in errors["traceback"].iloc[0]  # starts in the user's code


def test_ten_thousand_tiny_tasks_arrive_complete_and_in_order(cluster):
    run = pp.map(lambda x: x * 2, range(10_000))
    assert run.wait(120)
    df = run.result()
    assert len(df) == 10_000
    assert (df["result"] == df.index * 2).all()
    assert (df["status"] == "ok").all()
    assert df["attempts"].max() == 1


def test_empty_input_finishes_at_once_with_an_empty_frame(cluster):
    run = pp.map(lambda x: x, [])
    assert run.wait(10)
    assert run.result().empty and run.errors().empty
    assert run.summary().tasks == 0


def test_generator_input_is_consumed_once(cluster):
    run = pp.map(lambda x: x + 1, (i for i in range(7)))
    run.wait(30)
    assert list(run.result()["result"]) == [1, 2, 3, 4, 5, 6, 7]


def test_merge_rules_for_every_kind_of_result(cluster):
    def mixed(x):
        if x == 0:
            return {"a": 1, "b": "one"}
        if x == 1:
            return pd.Series({"a": 2, "b": "two"})
        if x == 2:
            return pd.DataFrame({"a": [3, 4], "b": ["three", "four"]})
        if x == 3:
            return 42
        if x == 4:
            return None
        raise RuntimeError("five")

    run = pp.map(mixed, range(6))
    run.wait(30)
    df = run.result()
    assert list(df.index) == [0, 1, 2, 2, 3, 4, 5]
    assert list(df["a"].iloc[:4]) == [1, 2, 3, 4]
    assert list(df["b"].iloc[:4]) == ["one", "two", "three", "four"]
    assert df["result"].iloc[4] == 42
    assert pd.isna(df["result"].iloc[5])
    assert df["status"].iloc[6] == "error" and df["error"].iloc[6] == "RuntimeError: five"


def test_a_result_key_named_like_metadata_keeps_its_name(cluster):
    run = pp.map(lambda x: {"status": f"mine-{x}"}, range(3))
    run.wait(30)
    df = run.result()
    assert list(df["status"]) == ["mine-0", "mine-1", "mine-2"]
    assert list(df["pp_status"]) == ["ok"] * 3


def test_printed_output_is_captured_per_task(cluster):
    def noisy(x):
        print(f"hello from {x}")
        return x

    run = pp.map(noisy, range(4))
    run.wait(30)
    assert [r.output for r in run.records] == [f"hello from {x}\n" for x in range(4)]


def test_an_unpicklable_item_fails_alone(cluster):
    items = [1, threading.Lock(), 3]
    run = pp.map(lambda x: 10, items)
    run.wait(30)
    statuses = [r.status for r in run.records]
    assert statuses == ["ok", "error", "ok"]
    assert "item 1 (lock) cannot be sent to an engine" in run.records[1].error


def test_an_unpicklable_result_fails_alone(cluster):
    run = pp.map(lambda x: threading.Lock() if x == 2 else x, range(5))
    run.wait(30)
    assert [r.status for r in run.records] == ["ok", "ok", "error", "ok", "ok"]
    assert "cannot be sent back" in run.records[2].error
    assert [r.value for r in run.records if r.status == "ok"] == [0, 1, 3, 4]


def test_an_unpicklable_function_is_refused_before_anything_runs(cluster):
    lock = threading.Lock()
    with pytest.raises(TypeError, match="cannot send to the engines: `lock` .*threading"):
        pp.map(lambda x: lock, range(3))


@pytest.mark.parametrize("bad, message", [
    (dict(items=5), "items must be iterable"),
    (dict(timeout=-1), "timeout must be a positive number"),
    (dict(retries=-2), "retries must be an integer"),
    (dict(batch=0), "batch must be 'auto' or an integer"),
    (dict(validate=3), "validate must be a callable"),
])
def test_bad_arguments_get_a_clear_error(cluster, bad, message):
    kwargs = dict(items=range(3))
    kwargs.update(bad)
    items = kwargs.pop("items")
    with pytest.raises((TypeError, ValueError), match=message):
        pp.map(lambda x: x, items, **kwargs)


def test_retries_rerun_items_that_raised(cluster, tmp_path):
    marker = tmp_path / "seen"

    def flaky(x):
        # fails the first time each item runs, succeeds the second
        flag = marker.with_name(f"seen-{x}")
        if not flag.exists():
            flag.write_text("1")
            raise OSError("transient")
        return x

    run = pp.map(flaky, range(6), retries=1)
    run.wait(60)
    assert [r.status for r in run.records] == ["ok"] * 6
    assert [r.attempts for r in run.records] == [2] * 6
    assert run.snapshot().retried == 6


def test_validate_callable_marks_wrong_results_invalid(cluster):
    run = pp.map(lambda x: {"p": x / 10}, range(12),
                 validate=lambda r: None if r["p"] <= 1 else f"p={r['p']} > 1")
    run.wait(30)
    df = run.result()
    assert list(df[df.status == "invalid"].index) == [11]
    assert df.loc[11, "error"] == "InvalidResult: p=1.1 > 1"


def test_validate_schema_checks_on_engines_and_sets_dtypes(cluster):
    def row(x):
        return {"n": x, "score": x / 2} if x != 4 else {"n": "four", "score": 2.0}

    run = pp.map(row, range(6), validate={"n": "int64", "score": "float64"})
    run.wait(30)
    df = run.result()
    assert df.loc[4, "status"] == "invalid"
    assert "'n'" in df.loc[4, "error"]
    assert str(df["n"].dtype) == "Int64"  # the invalid row leaves a gap: nullable integer
    assert str(df["score"].dtype) == "float64"


def test_summary_reports_speedup_and_per_engine_figures(cluster):
    def busy(x):
        import time
        t = time.perf_counter()
        while time.perf_counter() - t < 0.02:
            pass
        return x

    run = pp.map(busy, range(60))
    run.wait(60)
    summary = run.summary()
    assert summary.tasks == 60 and summary.counts == {"ok": 60}
    assert 1.0 < summary.speedup <= 2.2
    assert summary.task_s == pytest.approx(1.2, rel=0.3)
    assert set(summary.per_engine.index) == set(cluster.live_ids())
    assert summary.per_engine["tasks"].sum() == 60
    assert "60 tasks · 60 ok" in summary.line()


def test_results_only_cloudpickle_can_carry_come_back(cluster):
    class Point:
        def __init__(self, x):
            self.x = x

    run = pp.map(lambda x: (Point(x), lambda: x * 7), range(3))
    run.wait(30)
    assert [r.status for r in run.records] == ["ok"] * 3
    point, make = run.records[2].value
    assert point.x == 2 and make() == 14


def test_a_function_from_a_module_the_engines_lack_says_how_to_ship_it(cluster, tmp_path,
                                                                       monkeypatch):
    (tmp_path / "only_here.py").write_text("def double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_here

    try:
        run = pp.map(only_here.double, range(3))
        assert run.wait(60)
        errors = run.result()["error"]
        assert all("No module named 'only_here' on the engine" in e and
                   "register_pickle_by_value" in e for e in errors)
    finally:
        del sys.modules["only_here"]


# -- result() waits, like a future ----------------------------------------------------------

def nap(x):
    import time
    time.sleep(0.3 if x < 4 else 30)
    return x


def test_result_and_errors_wait_for_the_run_to_end(cluster):
    run = pp.map(lambda x: __import__("time").sleep(0.2) or x, range(6))
    df = run.result()  # no wait() first: result() blocks as Future.result() does
    assert run.done and list(df["status"]) == ["ok"] * 6 and list(df["result"]) == list(range(6))
    slow = pp.map(lambda x: __import__("time").sleep(0.5) or 1 / (x - 1), range(3))
    errors = slow.errors()
    assert slow.done and list(errors.index) == [1]


def test_result_with_a_timeout_raises_and_the_partial_frame_stays_available(cluster):
    run = pp.map(nap, range(6), batch=1)
    try:
        with pytest.raises(TimeoutError, match="did not end within 0.5 s"):
            run.result(timeout=0.5)
        partial = run.result(wait=False)
        assert "pending" in set(partial["status"]) and len(partial) == 6
        assert run.summary().tasks == 6 and not run.done  # neither waits for the run
        assert run.plot() is not None and not run.done
    finally:
        run.cancel()
        run.wait(30)
    assert set(run.result()["status"]) <= {"ok", "cancelled"}


def test_an_interrupt_while_result_waits_cancels_and_raises_run_interrupted(cluster):
    run = pp.map(nap, range(8), batch=1)
    timer = threading.Timer(1.5, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(pp.RunInterrupted) as error:
            run.result()
    finally:
        timer.cancel()
    assert isinstance(error.value, KeyboardInterrupt) and error.value.run is run and run.done
    statuses = run.result()["status"]
    assert (statuses == "ok").sum() == 4 and (statuses == "cancelled").sum() == 4
    assert "4 of 8 tasks had ended" in str(error.value)
    assert run.errors().empty and run.snapshot().failed == 0


def test_a_done_callback_runs_once_the_run_has_ended(cluster):
    seen = []
    run = pp.map(lambda x: x, range(3))
    run.add_done_callback(lambda ended: seen.append(ended.snapshot().finished))
    run.wait(30)
    assert wait_until(lambda: seen == [3], 5)
    run.add_done_callback(lambda ended: seen.append("late"))  # after the end: at once
    assert seen == [3, "late"]


def test_a_run_of_microsecond_tasks_does_not_claim_a_speedup(cluster):
    run = pp.map(lambda x: x, range(2000))
    run.wait(60)
    line = run.summary().line()
    assert "not meaningful" in line and "speedup 0.0" not in line, line


def test_big_items_travel_a_few_at_a_time_not_by_the_batch(cluster):
    # Six 2 MB items would go as three batches of two by count alone; a batch carries about
    # 1 MiB of items (at least one), so each goes in its own.
    items = [bytes([k]) * 2_000_000 for k in range(6)]
    run = pp.map(lambda b: (len(b), b[0]), items)
    df = run.result()
    assert list(df["result"]) == [(2_000_000, k) for k in range(6)]
    assert len(run.message_ids) >= 6  # the batches' requests (and the clean-up's)
