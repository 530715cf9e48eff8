"""Views drawn from synthetic snapshots and summaries: what they show, with no run behind them."""

import io

import pandas as pd

from pp_notebook.records import TaskRecord
from pp_notebook.snapshot import EngineSnapshot, Failure, Mark, RunSnapshot
from pp_notebook.summary import summarize
from pp_notebook.views.dashboard import Dashboard, counts_line
from pp_notebook.views.report import FailureReport
from pp_notebook.views.text import TextProgress

from helpers import wait_until


class Frames:
    """A source that plays back snapshots, then ends with the given records' summary."""

    def __init__(self, snapshots: list[RunSnapshot], records: list[TaskRecord]) -> None:
        self.snapshots, self.records = snapshots, records

    def snapshot(self) -> RunSnapshot:
        return self.snapshots.pop(0) if len(self.snapshots) > 1 else self.snapshots[0]

    def summary(self):
        return summarize(self.records, wall_s=2.0)


def engine(eid, state="busy", done=3, failed=0, item="(0.3, 0.2)"):
    return EngineSnapshot(id=eid, host="h", pid=None, state=state, done=done, failed=failed,
                          busy_s=1.0, running_task=7 if state == "busy" else None,
                          running_for_s=0.5 if state == "busy" else None,
                          running_item=item if state == "busy" else None)


RUNNING = RunSnapshot(total=10, counts={"pending": 6, "ok": 3, "error": 1}, retried=1,
                      elapsed_s=2.0, done=False, engines=(engine(0), engine(1, "idle")),
                      marks=(Mark(0, "0", 0, 0.0, 0.5, "ok"), Mark(3, "3", 1, 0.1, 0.4, "error")),
                      marks_total=2,
                      failures=(Failure(3, "3", "error", "ValueError: bad", "Traceback ..."),))
ENDED = RunSnapshot(total=10, counts={"ok": 4, "error": 1, "cancelled": 5}, retried=1,
                    elapsed_s=2.0, done=True, engines=(engine(0, "idle"), engine(1, "idle")))
RECORDS = [TaskRecord(i, i, s, engine=i % 2, host="h", duration_s=0.4, attempts=1)
           for i, s in enumerate(["ok"] * 4 + ["error"] + ["cancelled"] * 5)]


def test_the_text_line_shows_progress_then_the_summary():
    out = io.StringIO()
    view = TextProgress(Frames([RUNNING, ENDED], RECORDS), stream=out)
    view.start()
    view.stop()
    text = out.getvalue()
    assert "[#########" in text and "4/10 done · 1 failed" in text
    assert text.rstrip().endswith("10 tasks · 4 ok · 1 failed (1 error) · 5 cancelled · 2.0 s · "
                                  "speedup 2.0×")


def test_the_dashboard_draws_engines_charts_and_then_the_summary():
    dashboard = Dashboard(Frames([RUNNING, RUNNING, ENDED], RECORDS))
    dashboard.start()
    dashboard.stop()
    rows = dashboard.engines.value
    assert rows.count("<tr><td>") == 2 and rows.count(">idle</span>") == 2
    assert dashboard.charts.value.count("<svg") == 2
    assert "5 cancelled" in dashboard.counts.value and dashboard.bar.bar_style == "warning"
    assert "4 ok · 1 failed (1 error) · 5 cancelled" in dashboard.summary.value
    bundle = dashboard.bundle()
    assert bundle["text/plain"].startswith("10 tasks · 4 ok")
    assert "Per engine" in bundle["text/html"]


def test_the_counts_line_gives_running_retried_rate_and_eta():
    line = counts_line(RUNNING)
    assert line.startswith("4/10 done · 1 failed · 2.0 s · 1 running · 1 retried · ETA ")
    assert line.endswith("tasks/s")


def test_the_failure_report_lists_failures_with_tracebacks_one_click_away():
    errors = pd.DataFrame({"item": [(1, 2)], "status": ["error"], "error_type": ["ValueError"],
                           "error": ["bad"], "traceback": ["Traceback: line 3"]},
                          index=pd.Index([3], name="task"))
    report = FailureReport(errors)
    assert "1 failed task" in repr(report) and "ValueError: bad" in repr(report)
    html = report._repr_html_()
    assert "<details><summary>ValueError: bad</summary>" in html and "Traceback: line 3" in html
    assert not FailureReport(errors.iloc[:0])


def test_a_live_dashboard_shows_each_busy_engine_with_its_running_item():
    dashboard = Dashboard(Frames([RUNNING], RECORDS))  # a run that never ends
    dashboard.start()
    try:
        assert wait_until(lambda: "#7: (0.3, 0.2)" in dashboard.engines.value, 5)
        assert ">busy</span>" in dashboard.engines.value
    finally:
        dashboard.stop()
