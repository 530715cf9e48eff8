"""Big values shared by the tasks: shipped once per host, kept between runs, never changed by
a task, and gone from /dev/shm when forgotten or when the cluster stops."""

import glob
import subprocess
import sys
import textwrap
import warnings

import cloudpickle
import numpy as np
import pandas as pd
import pytest

import pp_notebook as pp
from pp_notebook import store as store_module
from pp_notebook.engine import leftovers

from helpers import ipython_shell, pid_alive, wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import tests/

ROWS = 1_000_000
big = pd.DataFrame({"g": np.arange(ROWS) % 20, "x": np.linspace(0.0, 1.0, ROWS),
                    "label": np.where(np.arange(ROWS) % 2, "odd", "even")})


def group_mean(k):
    return float(big[big.g == k].x.mean())


def segments(handle) -> list[str]:
    return glob.glob(f"/dev/shm/{handle.segment_prefix}-*")


@pytest.fixture
def clean(cluster):
    """The session's cluster, with no shared value before or after the test."""
    pp.forget()
    yield cluster
    pp.forget()


def test_a_big_frame_ships_once_per_host_and_is_reused_while_unchanged(clean):
    expected = [group_mean(k) for k in range(20)]
    first = pp.map(group_mean, range(20))
    assert list(first.result()["result"]) == pytest.approx(expected)
    (shipment,) = first.summary().shipments
    assert (shipment.name, shipment.hosts, shipment.reused) == ("big", 1, False)
    line = first.summary().line()
    assert "shipped big (" in line and "once to 1 host in" in line
    assert len(segments(clean)) == 1
    again = pp.map(group_mean, range(20))
    assert list(again.result()["result"]) == pytest.approx(expected)
    assert again.summary().shipments[0].reused
    line = again.summary().line()
    assert "big (" in line and "reused from the previous run" in line
    states = clean.client[clean.live_ids()].apply_sync(leftovers)
    assert all(len(state["shared"]) == 1 for state in states)  # unpickled once per engine


def test_a_frame_changed_in_place_ships_again(clean):
    data = pd.DataFrame({"x": np.zeros(ROWS)})
    first = pp.map(lambda k: float(data.x.sum()), range(2))
    assert list(first.result()["result"]) == [0.0, 0.0]
    data.loc[0, "x"] = 5.0  # same object, new content
    second = pp.map(lambda k: float(data.x.sum()), range(2))
    assert list(second.result()["result"]) == [5.0, 5.0]
    assert not second.summary().shipments[0].reused


def test_changes_a_task_makes_never_reach_later_tasks_or_runs(clean):
    def meddle(k):
        big["x"] += 100  # in place, on this task's own wrapper
        big["extra"] = k
        big.sort_values("x", ascending=False, inplace=True)
        return float(big.x.min())

    run = pp.map(meddle, range(8), batch=4)
    assert list(run.result()["result"]) == [100.0] * 8  # each task started from the original
    after = pp.map(lambda k: (float(big.x.min()), "extra" in big.columns), range(4))
    assert list(after.result()["result"]) == [(0.0, False)] * 4


def test_writing_into_shared_memory_fails_that_task_alone_with_a_clear_error(clean):
    array = np.arange(ROWS, dtype=float)

    def write(k):
        if k == 1:
            array[0] = -1.0
        return float(array[k])

    run = pp.map(write, range(3))
    frame = run.result()
    assert list(frame["status"]) == ["ok", "error", "ok"]
    assert "read-only" in frame.loc[1, "error"] and "change a copy" in frame.loc[1, "error"]
    assert not run.result().loc[[0, 2], "result"].isna().any()


def test_numeric_columns_are_used_in_place_and_text_columns_arrive_whole(clean):
    def inspect(k):
        return {"writeable": bool(big.x.to_numpy().flags.writeable),
                "odd": int((big.label == "odd").sum())}

    frame = pp.map(inspect, range(2)).result()
    assert not frame["writeable"].any()  # the mapped, read-only numeric block
    assert list(frame["odd"]) == [ROWS // 2] * 2


def test_a_parallel_cell_shares_the_frames_it_reads(clean, capsys):
    with ipython_shell() as ip:
        ip.user_ns["df_big"] = big
        df = ip.run_cell_magic("parallel", "k in range(4) --no-widget",
                               "float(df_big[df_big.g == k].x.mean())")
        assert list(df["result"]) == pytest.approx([group_mean(k) for k in range(4)])
        assert "shipped df_big (" in capsys.readouterr().out
        ip.user_ns["lookup"] = {"a": 1}
        df = ip.run_cell_magic("parallel", "k in range(2) --quiet --share lookup", "lookup['a']")
        assert list(df["result"]) == [1, 1]
        assert [s.name for s in pp.last_run().summary().shipments] == ["lookup"]


def test_forget_and_stop_leave_nothing_in_shared_memory(clean):
    pp.map(group_mean, range(2)).result()
    assert segments(clean)
    pp.forget()
    assert not segments(clean)
    states = clean.client[clean.live_ids()].apply_sync(leftovers)
    assert all(state["shared"] == [] for state in states)


def test_a_value_that_does_not_fit_in_shared_memory_goes_with_the_task(clean, monkeypatch):
    monkeypatch.setattr("pp_notebook.run.fits_in_shared_memory", lambda nbytes: False)
    with pytest.warns(pp.NoRoomToShare, match="does not fit in /dev/shm"):
        run = pp.map(group_mean, range(3))
    assert list(run.result()["result"]) == pytest.approx([group_mean(k) for k in range(3)])
    assert run.summary().shipments == () and not segments(clean)


def test_a_killed_kernel_leaves_no_shared_memory_behind(tmp_path):
    script = textwrap.dedent("""
        import json, os, signal, numpy as np, pandas as pd, pp_notebook as pp
        pp.start(1)
        data = pd.DataFrame({"x": np.zeros(1_000_000)})
        pp.map(lambda k: float(data.x.sum()), range(2)).result()
        handle = pp.cluster.current()
        print(json.dumps({"prefix": handle.segment_prefix, "controller": handle.controller_pid}),
              flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    facts = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    assert wait_until(lambda: not pid_alive(facts["controller"]), 20)
    assert wait_until(lambda: not glob.glob(f"/dev/shm/{facts['prefix']}-*"), 20), \
        glob.glob(f"/dev/shm/{facts['prefix']}-*")


def test_the_store_limit_removes_the_oldest_value_from_the_hosts(clean, monkeypatch):
    monkeypatch.setattr(store_module.STORE, "limit_bytes", 10_000_000)
    first = pd.DataFrame({"x": np.zeros(ROWS)})  # 8 MB each: the second pushes the first out
    second = pd.DataFrame({"x": np.ones(ROWS)})
    pp.map(lambda k: float(first.x.sum()), range(2)).result()
    pp.map(lambda k: float(second.x.sum()), range(2)).result()
    pp.map(lambda k: 1, range(2)).result()  # a later run removes what the store dropped
    assert len(segments(clean)) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(pp.map(lambda k: float(first.x.sum()), range(2)).result()["result"]) \
            == [0.0, 0.0]  # shipped again when needed
