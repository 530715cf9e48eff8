"""The dashboard, the plots and the HTML summary on real runs; a saved notebook keeps them."""

import sys

import cloudpickle
import nbformat
import pytest
from matplotlib.figure import Figure
from nbclient import NotebookClient

import pp_notebook as pp
from pp_notebook.run import MARKS_KEPT
from pp_notebook.summary import summary_html
from pp_notebook.views.charts import BINS
from pp_notebook.views.dashboard import Dashboard

from helpers import watched

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import tests/

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def fail_on_three(x):
    import time
    time.sleep(0.005)
    if x == 3:
        raise ValueError("item 3 is bad")
    return {"x": x}


@pytest.fixture(scope="module")
def finished(session_cluster):
    """One run of 30 items (item 3 fails) watched to its end by a dashboard."""
    run = pp.map(fail_on_three, range(30))
    dashboard = watched(run)
    assert run.done
    return run, dashboard


def test_finished_dashboard_shows_a_row_per_engine_full_progress_and_the_failure(cluster,
                                                                                  finished):
    run, dashboard = finished
    rows = dashboard.engines.value.count("<tr><td>")
    assert rows == len({r.engine for r in run.records}) == 2
    assert dashboard.bar.value == dashboard.bar.max == 30
    assert dashboard.bar.bar_style == "warning"
    assert "<b>100%</b>" in dashboard.percent.value
    assert "30/30 done" in dashboard.counts.value and "1 failed" in dashboard.counts.value
    assert '<td><b style="color:#d62728">1</b></td>' in dashboard.engines.value
    assert "29 ok · 1 failed (1 error)" in dashboard.summary.value
    assert " MB</td>" in dashboard.engines.value  # memory of the local engine processes
    assert dashboard.charts.value.count("<svg") == 2  # timeline and histogram


def test_display_falls_back_to_the_summary_as_html_and_text(finished):
    _, dashboard = finished
    bundle = dashboard.bundle()
    assert bundle[WIDGET_VIEW]["model_id"] == dashboard.widget.model_id
    assert "Per engine" in bundle["text/html"] and "Slowest tasks" in bundle["text/html"]
    assert bundle["text/plain"].startswith("30 tasks · 29 ok · 1 failed")


def test_summary_html_holds_the_figures_per_engine_and_slowest(finished):
    run, _ = finished
    summary = run.summary()
    html = summary_html(summary)
    assert summary.line() in html.replace("&#x27;", "'")
    assert "1 (1 error)" in html and f"{summary.speedup:.2f}×" in html
    assert html.count("<tbody>") == 3 and html.count("<tr>") == 1 + 2 + 5  # figures, engines,
    assert "Per engine" in html and "Slowest tasks" in html                 # 5 slowest tasks
    assert "<script" not in html and "<style" not in html  # plain, survives sanitisers


def test_plot_draws_one_lane_per_engine_and_a_histogram_of_every_task(finished):
    run, _ = finished
    fig = run.plot()
    assert isinstance(fig, Figure)
    timeline, histogram = fig.axes
    engines = sorted({r.engine for r in run.records})
    assert len(engines) == 2
    assert [t.get_text().split("\n")[0] for t in timeline.get_yticklabels()] == \
        [f"engine {e}" for e in engines]
    bars = sum(len(c.get_paths()) for c in timeline.collections)
    assert bars == 30
    assert sum(p.get_height() for p in histogram.patches) == 30
    assert timeline.get_xlim()[0] == 0 and timeline.get_xlim()[1] <= run.elapsed_s * 1.1


def test_snapshot_keeps_a_bounded_window_of_attempts_and_counts_all(cluster):
    run = pp.map(fail_on_three, range(10), retries=1)
    run.wait(60)
    snapshot = run.snapshot()
    assert snapshot.marks_total == 11 and len(snapshot.marks) == 11
    assert sum(a.status == "error" for a in snapshot.marks) == 2  # both attempts of item 3
    assert all(0 <= a.start_s <= snapshot.elapsed_s for a in snapshot.marks)
    many = pp.map(lambda x: x, range(MARKS_KEPT + 500), batch=1000)
    many.wait(60)
    assert len(many.snapshot().marks) == MARKS_KEPT
    assert many.snapshot().marks_total == MARKS_KEPT + 500


def test_timeline_memory_stays_fixed_and_accounts_for_all_busy_time(cluster):
    run = pp.map(lambda x: x * 2, range(30_000))
    dashboard = watched(run)  # frames miss most attempts: too many finish between two
    engines = run.snapshot().engines
    assert all(len(series) == BINS for lane in dashboard.timeline.lanes.values() for series in lane)
    folded = sum(sum(series) for lane in dashboard.timeline.lanes.values() for series in lane)
    assert folded == pytest.approx(sum(e.busy_s for e in engines), rel=0.05)
    assert len(dashboard.charts.value) < 40_000
    assert sum(dashboard.histogram.ok) + sum(dashboard.histogram.failed) <= 30_000


def test_a_saved_notebook_keeps_the_widget_state_and_the_html_summary(tmp_path):
    cells = [
        "import pp_notebook as pp\nfrom pp_notebook.views.dashboard import Dashboard\npp.start(2)",
        """\
def task(x):
    if x == 3:
        raise ValueError("item 3 is bad")
    return x

run = pp.map(task, range(20))
view = Dashboard(run).start()
run.wait()
view.stop()""",
        "run.summary()",
        "pp.stop()",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(notebook, timeout=120, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    nbformat.write(notebook, tmp_path / "saved.ipynb")
    saved = nbformat.read(tmp_path / "saved.ipynb", as_version=4)

    (shown,) = saved.cells[1].outputs
    assert WIDGET_VIEW in shown.data
    assert "1 (1 error)" in shown.data["text/html"]  # updated to the summary at the end
    assert "20 tasks · 19 ok · 1 failed" in shown.data["text/plain"]
    (summary,) = saved.cells[2].outputs
    assert "<b>pp_notebook run</b>: 20 tasks · 19 ok" in summary.data["text/html"]

    state = saved.metadata.widgets[WIDGET_STATE]["state"]
    assert shown.data[WIDGET_VIEW]["model_id"] in state
    (bar,) = [m["state"] for m in state.values() if m["model_name"] == "IntProgressModel"]
    assert bar["value"] == bar["max"] == 20
    tables = [m["state"]["value"] for m in state.values()
              if m["model_name"] == "HTMLModel" and "<th>CPU</th>" in m["state"]["value"]]
    assert len(tables) == 1 and tables[0].count("<tr><td>") == 2


def spin(item):
    import time
    end = time.perf_counter() + 2.0
    while time.perf_counter() < end:  # busy: the engine's CPU shows
        pass
    return item[0]


def test_live_engine_rows_show_plain_items_and_cpu_in_cores(cluster):
    import re

    import numpy as np

    from helpers import wait_until

    run = pp.map(spin, [(np.float64(0.3), 0.2), (np.float64(0.5), 0.1)], batch=1)
    dashboard = Dashboard(run).start()
    try:
        assert wait_until(lambda: "(0.3, 0.2)" in dashboard.engines.value
                          and re.search(r"<td>[1-9]\.\d cores</td>|<td>0\.[5-9] cores</td>",
                                        dashboard.engines.value), 15)
        assert "np.float64" not in dashboard.engines.value
    finally:
        run.cancel()
        dashboard.stop()
