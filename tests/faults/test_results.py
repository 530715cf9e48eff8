"""Results that are hard to bring back: 200 MB, unpicklable, 50 MB of printed output.
The item itself gets its value or a clear error; every other item of the run is untouched."""

import sys
import time

import cloudpickle
import pytest

import pp_notebook as pp
from pp_notebook.engine import OUTPUT_LIMIT

from .helpers import read_marker, time_until, wrong_results

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import tests/


def special_on(x, victim, what, marker):
    """Item `victim` returns (or prints) something awkward, stamping `marker` as it ends."""
    import os as _os
    import time as _time
    print(f"task {x}")
    if x != victim:
        return {"x": x, "y": x * x}
    if what == "print 50 MB":
        line = "y" * 999
        for _ in range(50_000):
            print(line)
        value = "printed"
    elif what == "200 MB result":
        value = bytes(200_000_000)
    elif what == "threading.Lock":
        import threading
        value = threading.Lock()
    elif what == "generator of lambdas":
        value = (lambda: i for i in range(3))  # noqa: B023
    with open(marker + ".tmp", "w") as f:
        f.write(f"{_time.time()} {_os.getpid()}")
    _os.replace(marker + ".tmp", marker)
    return value


def _run(what, tmp_path, fault_figures, victim=3, n=12):
    marker = str(tmp_path / "fault")
    run = pp.map(lambda x: special_on(x, victim, what, marker), range(n), batch=n // 2)
    injected, _ = read_marker(tmp_path / "fault", 60)
    noticed = time_until(lambda: run.records[victim].status != "pending", 60)
    detect_s = None if noticed is None else time.time() - injected
    assert run.wait(60)
    expected = {x: {"x": x, "y": x * x} for x in range(n) if x != victim}
    lost = wrong_results(run.records, expected)
    fault_figures(what, detect_s, lost, run.records[victim].status)
    assert lost == 0, run.errors()
    assert all(r.output == f"task {r.task}\n" for r in run.records if r.task != victim)
    frame = run.result()
    assert list(frame.index) == list(range(n))
    assert list(frame["y"].drop(index=victim)) == [x * x for x in range(n) if x != victim]
    return run, run.records[victim]


def test_a_200_mb_result_comes_back_whole_beside_normal_ones(cluster, tmp_path, fault_figures):
    _, record = _run("200 MB result", tmp_path, fault_figures)
    assert record.status == "ok"
    assert type(record.value) is bytes and len(record.value) == 200_000_000
    assert record.value.count(0) == 200_000_000


@pytest.mark.parametrize("what", ["threading.Lock", "generator of lambdas"])
def test_a_result_that_cannot_be_pickled_is_that_item_s_error(cluster, what, tmp_path,
                                                             fault_figures):
    run, record = _run(what, tmp_path, fault_figures)
    assert record.status == "error", record
    assert "cannot be sent back" in record.error and record.error_type, record
    assert record.output == "task 3\n"  # its output still came back
    assert len(run.errors()) == 1


def test_printing_50_mb_is_capped_and_the_run_is_fine(cluster, tmp_path, fault_figures):
    _, record = _run("print 50 MB", tmp_path, fault_figures)
    assert record.status == "ok" and record.value == "printed"
    assert record.output.startswith("task 3\n" + "y" * 999)
    assert len(record.output) <= OUTPUT_LIMIT + 200
    assert "more characters of output cut" in record.output.splitlines()[-1]
