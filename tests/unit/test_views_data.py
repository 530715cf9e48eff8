"""What the live views show: plain item reprs, CPU in cores, cancelled apart from failed."""

import json

import numpy as np

from pp_notebook import fmt
from pp_notebook.snapshot import EngineSnapshot, Mark, RunSnapshot
from pp_notebook.views.charts import BINS, TASK_BARS, Histogram, Timeline
from pp_notebook.views.state import DashboardState
from pp_notebook.views.static import bin_title
from pp_notebook.views.text import status_text


def test_item_reprs_are_plain_for_numpy_numbers():
    assert fmt.short_repr((np.float64(0.3), 0.2)) == "(0.3, 0.2)"
    assert fmt.short_repr([np.int64(3), np.bool_(True)]) == "[3, True]"
    assert len(fmt.short_repr("x" * 500)) < 30


def test_engine_cpu_is_shown_in_cores():
    assert fmt.cores(166.0) == "1.7 cores"
    assert fmt.cores(0.0) == "0.0 cores" and fmt.cores(None) == "–"


def test_live_counts_keep_cancelled_apart():
    snap = RunSnapshot(total=50, counts={"ok": 4, "cancelled": 46}, retried=0, elapsed_s=1.0,
                       done=True)
    assert snap.failed == 0 and snap.cancelled == 46
    assert status_text(snap) == "4/50 done · 46 cancelled · 1.0 s"


def test_cancelled_time_is_apart_in_the_timeline_and_the_histogram():
    timeline, histogram = Timeline(), Histogram()
    timeline.add(0, 0.0, 0.5, "cancelled")
    timeline.add(1, 0.0, 0.5, "error")
    timeline.tasks = None  # as after too many attempts: bars per run of bins
    snap = RunSnapshot(total=2, counts={"cancelled": 1, "error": 1}, retried=0, elapsed_s=0.5,
                       done=True)
    bars = timeline.state(snap)["bars"]
    assert [(bar[0], bar[3], bar[5], bar[6]) for bar in bars] == \
        [(0, "cancelled", 1, {"cancelled": 1}), (1, "failed", 1, {"error": 1})]
    for status in ("cancelled", "error", "ok"):
        histogram.add(0.5, status)
    assert {name: sum(counts) for name, counts in histogram.counts.items()} == \
        {"ok": 1, "failed": 1, "cancelled": 1}


def test_timeline_hovers_task_by_task_then_by_bin_with_the_status_mix():
    marks = tuple(Mark(i, str(i), i % 2, i * 0.01, 0.01, "error" if i == 5 else "ok")
                  for i in range(TASK_BARS + 50))
    engines = tuple(EngineSnapshot(e, "h", None, "idle", 125, e == 1, 1.25, None, None)
                    for e in (0, 1))
    timeline = Timeline()
    few = RunSnapshot(total=300, counts={}, retried=0, elapsed_s=1.0, done=False,
                      engines=engines, marks=marks[:10], marks_total=10)
    timeline.update(few)
    state = timeline.state(few)
    assert state["mode"] == "tasks" and state["bars"][5] == [1, 0.05, 0.01, "error", 5, "5"]
    assert bin_title(1.0, 0.5, 40, {"ok": 38, "error": 2}) == "1.0 s – 1.5 s · 40 tasks · " \
        "38 ok, 2 error"
    many = RunSnapshot(total=300, counts={}, retried=0, elapsed_s=2.5, done=True,
                       engines=engines, marks=marks, marks_total=len(marks))
    timeline.update(many)
    state = timeline.state(many)
    assert state["mode"] == "bins" and len(state["bars"]) <= 2 * BINS
    assert sum(bar[5] for bar in state["bars"]) == len(marks)
    assert sum(bar[6].get("error", 0) for bar in state["bars"]) == 1


def test_a_frame_costs_the_same_bytes_for_100_000_tasks_as_for_1_000():
    sizes = {}
    for total in (1_000, 100_000):
        state = DashboardState()
        for frame in range(1, 21):  # frames that each miss most attempts
            done = total * frame // 20
            engines = tuple(EngineSnapshot(e, "h", None, "busy", done // 2, 0, frame * 0.5,
                                           done, 0.01, str(done)) for e in (0, 1))
            marks = tuple(Mark(done - i, str(done - i), i % 2, frame * 0.5 - i * 1e-4, 1e-4,
                               "ok") for i in range(min(500, done)))
            snap = RunSnapshot(total=total, counts={"ok": done, "pending": total - done},
                               retried=0, elapsed_s=frame * 0.5, done=frame == 20,
                               engines=engines, marks=marks, marks_total=done)
            sizes[total] = len(json.dumps(state.update(snap)))
    assert sizes[100_000] < 20_000 and sizes[100_000] < 1.5 * sizes[1_000], sizes
