"""Views drawn from synthetic snapshots and summaries: what they show, with no run behind them."""

import io
import json
import re

import pandas as pd

from pp_notebook.records import TaskRecord
from pp_notebook.snapshot import EngineSnapshot, Failure, Mark, PreviewRow, RunSnapshot
from pp_notebook.summary import summarize
from pp_notebook.views.dashboard import Dashboard
from pp_notebook.views.report import FailureReport
from pp_notebook.views.state import counts_line
from pp_notebook.views.text import TextProgress

from helpers import wait_until

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class Frames:
    """A source that plays back snapshots, then ends with the given records' summary."""

    def __init__(self, snapshots: list[RunSnapshot], records: list[TaskRecord]) -> None:
        self.snapshots, self.records = snapshots, records
        self.cancels = 0

    def snapshot(self) -> RunSnapshot:
        return self.snapshots.pop(0) if len(self.snapshots) > 1 else self.snapshots[0]

    def summary(self):
        return summarize(self.records, wall_s=2.0)

    def cancel(self) -> None:
        self.cancels += 1


def engine(eid, state="busy", done=3, failed=0, item="(0.3, 0.2)"):
    return EngineSnapshot(id=eid, host="h", pid=None, state=state, done=done, failed=failed,
                          busy_s=1.0, running_task=7 if state == "busy" else None,
                          running_for_s=0.5 if state == "busy" else None,
                          running_item=item if state == "busy" else None)


FAILURE = Failure(3, "3", "error", "ValueError: bad", 'Traceback ...\n  line 3\nValueError: bad')
RUNNING = RunSnapshot(total=10, counts={"pending": 6, "ok": 3, "error": 1}, retried=1,
                      elapsed_s=2.0, done=False, engines=(engine(0), engine(1, "idle")),
                      marks=(Mark(0, "0", 0, 0.0, 0.5, "ok"), Mark(3, "3", 1, 0.1, 0.4, "error")),
                      marks_total=2, failures=(FAILURE,),
                      first_rows=(PreviewRow(0, "0", "ok", "{'x': 0}"),),
                      latest_rows=(PreviewRow(3, "3", "error", "ValueError: bad"),))
ENDED = RunSnapshot(total=10, counts={"ok": 4, "error": 1, "cancelled": 5}, retried=1,
                    elapsed_s=2.0, done=True, engines=(engine(0, "idle"), engine(1, "idle")),
                    marks=RUNNING.marks, marks_total=2, failures=(FAILURE,))
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


def test_the_live_dashboard_syncs_compact_state_with_text_fallbacks():
    dashboard = Dashboard(Frames([RUNNING], RECORDS))  # a run that never ends
    dashboard.start()
    try:
        widget = dashboard.widget
        assert wait_until(lambda: widget.engines and widget.engines[0]["running"], 5)
        assert widget.engines[0]["running"] == "#7: (0.3, 0.2)"
        assert [row["state"] for row in widget.engines] == ["busy", "idle"]
        assert widget.progress["completed"] == 4 and not widget.progress["done"]
        assert widget.timeline["mode"] == "tasks" and len(widget.timeline["bars"]) == 2
        assert widget.failures == [[3, "3", "error", "ValueError: bad"]]
        assert widget.preview["first"][0][:3] == [0, "0", "ok"]
        bundle = dashboard.bundle()
        assert bundle[WIDGET_VIEW]["model_id"] == widget.model_id
        assert bundle["text/plain"].startswith("4/10 done · 1 failed")
        assert "Traceback" not in json.dumps(widget.get_state())  # sent only when asked for
    finally:
        dashboard.stop()


def test_cancel_and_traceback_messages_from_the_front_end():
    source = Frames([RUNNING], RECORDS)
    dashboard = Dashboard(source)
    dashboard.start()
    try:
        assert wait_until(lambda: dashboard.widget.failures, 5)
        sent = []
        dashboard.widget.send = sent.append
        dashboard._on_message(dashboard.widget, {"kind": "traceback", "task": 3}, [])
        assert sent == [{"kind": "traceback", "task": 3, "text": FAILURE.traceback}]
        for _ in range(2):  # a second click while cancelling does nothing more
            dashboard._on_message(dashboard.widget, {"kind": "cancel"}, [])
        assert source.cancels == 1 and dashboard.cancelled and dashboard.widget.cancelling
    finally:
        dashboard.stop()


def test_the_ended_dashboard_becomes_a_static_picture_and_closes_its_widget():
    dashboard = Dashboard(Frames([RUNNING, RUNNING, ENDED], RECORDS))
    dashboard.start()
    dashboard.stop()
    bundle = dashboard.bundle()
    assert set(bundle) == {"text/html", "text/plain"}  # no widget view left to break
    assert bundle["text/plain"].startswith("10 tasks · 4 ok")
    html = bundle["text/html"]
    assert "4 ok · 1 failed (1 error) · 5 cancelled" in html and "Per engine" in html
    assert "<details><summary>task 3 · 3 · ValueError: bad</summary>" in html
    assert "line 3" in html and "<script" not in html
    assert dashboard.widget.comm is None  # closed


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


def test_every_theme_variable_has_a_fallback():
    from pp_notebook.views.assets import asset
    from pp_notebook.views.static import PAGE_CSS, THEMED

    for text in (asset("dashboard.css"), PAGE_CSS, THEMED):
        uses = re.findall(r"var\(--jp-[\w-]+\s*(,)?", text)
        assert uses and all(uses), "a var(--jp-…) without a fallback"
        assert not re.search(r"var\(--jp-ui-font-color[23]", text)  # under 4.5:1


def test_the_widget_css_draws_statuses_in_the_colours_of_every_other_view():
    from pp_notebook.views.assets import asset
    from pp_notebook.views.theme import RUNNING_COLOUR, STATUS_COLOURS

    css = asset("dashboard.css")
    drawn = dict(re.findall(r"\.ppnb-dash \.s-(\w+) \{ fill: (#[0-9a-f]{6})", css))
    assert drawn == {**STATUS_COLOURS, "failed": STATUS_COLOURS["error"],
                     "running": RUNNING_COLOUR}
