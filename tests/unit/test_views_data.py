"""What the live views show: plain item reprs, CPU in cores, cancelled apart from failed."""

import numpy as np

from pp_notebook import fmt
from pp_notebook.snapshot import RunSnapshot
from pp_notebook.views.charts import Histogram, Timeline
from pp_notebook.views.text import status_text
from pp_notebook.views.theme import CANCELLED_COLOUR, FAILED_COLOUR


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


def test_cancelled_time_is_grey_in_the_timeline_and_apart_in_the_histogram():
    timeline, histogram = Timeline(), Histogram()
    timeline.add(0, 0.0, 0.5, "cancelled")
    timeline.add(1, 0.0, 0.5, "error")
    snap = RunSnapshot(total=2, counts={"cancelled": 1, "error": 1}, retried=0, elapsed_s=0.5,
                       done=True)
    svg = timeline.svg(snap)
    assert svg.count(f'fill="{CANCELLED_COLOUR}"') == 1
    assert svg.count(f'fill="{FAILED_COLOUR}"') == 1
    for status in ("cancelled", "error", "ok"):
        histogram.add(0.5, status)
    assert (sum(histogram.ok), sum(histogram.failed), sum(histogram.cancelled)) == (1, 1, 1)
