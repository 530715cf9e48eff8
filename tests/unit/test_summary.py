"""Summaries keep cancelled apart from failed, and do not claim a speedup for microsecond tasks."""

from pp_notebook.records import TaskRecord
from pp_notebook.summary import summarize, summary_html


def record(task, status, engine=0, duration=0.5):
    return TaskRecord(task, task, status, engine=engine, host="h", duration_s=duration,
                      attempts=1)


def test_cancelled_tasks_are_counted_apart_from_failures():
    records = [record(0, "ok"), record(1, "error"), *(record(i, "cancelled") for i in (2, 3, 4))]
    summary = summarize(records, wall_s=1.0)
    assert summary.failed == 1
    assert "1 failed (1 error)" in summary.line() and "3 cancelled" in summary.line()
    assert summary.per_engine.loc[0, "failed"] == 1
    assert summary.per_engine.loc[0, "cancelled"] == 3
    assert summary.per_engine.loc[0, "failure_rate"] == 0.5  # of the 2 that ran to an end


def test_a_run_with_only_cancellations_shows_no_failure():
    summary = summarize([record(0, "ok"), record(1, "cancelled")], wall_s=1.0)
    assert "failed" not in summary.line() and "1 cancelled" in summary.line()
    assert summary.per_engine.loc[0, "failure_rate"] == 0.0


def test_microsecond_tasks_say_speedup_is_not_meaningful():
    records = [record(i, "ok", duration=2e-6) for i in range(100)]
    summary = summarize(records, wall_s=0.05)
    assert summary.too_short
    assert "speedup" in summary.line() and "not meaningful" in summary.line()
    assert "0.00×" not in summary.line() and "efficiency" not in str(summary)
    assert "0.00×" not in summary_html(summary)


def test_tasks_well_above_the_overhead_report_their_speedup():
    summary = summarize([record(i, "ok", engine=i % 2, duration=0.01) for i in range(10)],
                        wall_s=0.05)
    assert not summary.too_short and "speedup 2.0×" in summary.line()
