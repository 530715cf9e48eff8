"""The dashboard on real runs and a real kernel: its compact state, the final picture that
replaces it, the Cancel button of a waiting cell, and the wheel that carries its front-end."""

import json
import os
import queue
import re
import subprocess
import sys
import sysconfig
import time
import zipfile
from html import unescape
from pathlib import Path

import cloudpickle
import nbformat
import pytest
from matplotlib.figure import Figure
from nbclient import NotebookClient
from nbconvert import HTMLExporter

import pp_notebook as pp
from pp_notebook.run import MARKS_KEPT
from pp_notebook.summary import summary_html
from pp_notebook.views.charts import BINS
from pp_notebook.views.dashboard import Dashboard

from helpers import execute, text_of, wait_until, watched

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import tests/

REPO = Path(__file__).resolve().parents[2]
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


def test_finished_dashboard_shows_each_engine_full_progress_and_the_failure(cluster, finished):
    run, dashboard = finished
    widget = dashboard.widget
    assert [row["id"] for row in widget.engines] == sorted({r.engine for r in run.records})
    assert widget.progress["completed"] == widget.progress["total"] == 30
    assert widget.progress["done"] and "30/30 done · 1 failed" in widget.progress["line"]
    assert sum(row["failed"] for row in widget.engines) == 1
    assert all(row["memory"].endswith("MB") for row in widget.engines)  # local processes
    assert widget.timeline["mode"] == "tasks" and len(widget.timeline["bars"]) == 30
    assert sum(map(sum, (widget.histogram[k] for k in ("ok", "failed", "cancelled")))) == 30
    assert widget.failures == [[3, "3", "error", "ValueError: item 3 is bad"]]


def test_the_final_picture_replaces_the_widget_and_needs_no_kernel(finished):
    _, dashboard = finished
    bundle = dashboard.bundle()
    assert WIDGET_VIEW not in bundle and bundle["text/plain"].startswith("30 tasks · 29 ok")
    html = bundle["text/html"]
    assert "Per engine" in html and "Slowest tasks" in html
    assert html.count("<svg") == 2  # timeline, histogram: inline, themed, with hovers
    assert html.count('src="data:image/svg+xml;base64,') == 2  # the same, for untrusted
    assert len(re.findall(r"<title>task \d+ · ", html)) == 30  # a hover per task
    assert 'raise ValueError("item 3 is bad")' in unescape(html)  # its traceback
    assert "<script" not in html


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


def test_the_state_stays_small_and_accounts_for_all_busy_time(cluster):
    run = pp.map(lambda x: x * 2, range(30_000))
    dashboard = watched(run)  # frames miss most attempts: too many finish between two
    engines = run.snapshot().engines
    lanes = dashboard.state.timeline.lanes.values()
    assert all(len(series) == BINS for lane in lanes for series in lane.busy.values())
    folded = sum(sum(series) for lane in lanes for series in lane.busy.values())
    assert folded == pytest.approx(sum(e.busy_s for e in engines), rel=0.05)
    timeline = dashboard.widget.timeline
    assert timeline["mode"] == "bins" and len(timeline["bars"]) <= 2 * BINS
    assert sum(bar[5] for bar in timeline["bars"]) == pytest.approx(30_000, rel=0.05)
    assert len(json.dumps(dashboard.state.values)) < 20_000


def test_a_saved_notebook_keeps_the_final_picture_and_no_widget(tmp_path):
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
        "pp.stop()",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(notebook, timeout=120, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    nbformat.write(notebook, tmp_path / "saved.ipynb")
    saved = nbformat.read(tmp_path / "saved.ipynb", as_version=4)

    (shown,) = saved.cells[1].outputs
    assert set(shown.data) == {"text/html", "text/plain"}  # replaced: no widget view left
    assert "20 tasks · 19 ok · 1 failed" in shown.data["text/plain"]
    assert "<details><summary>task 3 · 3 · ValueError: item 3 is bad" in shown.data["text/html"]
    assert not any(WIDGET_VIEW in output.get("data", {})
                   for cell in saved.cells for output in cell.outputs)
    page, _ = HTMLExporter().from_notebook_node(saved)  # nbconvert's HTML: the picture as is
    assert page.count('class="ppnb-final"') == 1 and page.count("<svg ") == 2


def spin(item):
    import time
    end = time.perf_counter() + 2.0
    while time.perf_counter() < end:  # busy: the engine's CPU shows
        pass
    return item[0]


def test_live_engine_rows_show_plain_items_and_cpu_in_cores(cluster):
    import numpy as np

    run = pp.map(spin, [(np.float64(0.3), 0.2), (np.float64(0.5), 0.1)], batch=1)
    dashboard = Dashboard(run).start()
    try:
        def rows():
            return json.dumps(dashboard.widget.engines)
        assert wait_until(lambda: "(0.3, 0.2)" in rows()
                          and re.search(r'"([1-9]\.\d|0\.[5-9]) cores"', rows()), 15)
        assert "np.float64" not in rows()
    finally:
        run.cancel()
        dashboard.stop()


def test_the_wheel_carries_the_widget_files_and_an_install_loads_them(tmp_path):
    """A wheel built from the repository, installed into a fresh venv (its dependencies
    borrowed from this one), finds dashboard.js and .css inside the installed package."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w",
                    str(tmp_path / "dist"), str(REPO)], check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("pp_notebook-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"pp_notebook/widgets/dashboard.js", "pp_notebook/widgets/dashboard.css"} <= set(names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    # this venv's packages, after the new one's own (its .pth files, the editable install's
    # path among them, are not read)
    Path(site.stdout.strip(), "borrowed.pth").write_text(sysconfig.get_paths()["purelib"])
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                    "--no-deps", "--quiet", str(wheel)], check=True, timeout=300)
    check = subprocess.run([python, "-c", """
import json, pp_notebook
from pp_notebook.views.dashboard import DashboardWidget
widget = DashboardWidget()
print(json.dumps([pp_notebook.__file__, widget._esm, widget._css]))"""],
                           capture_output=True, text=True, cwd="/", timeout=120,
                           env=dict(os.environ, PYTHONPATH=""))
    assert check.returncode == 0, check.stderr[-3000:]
    where, esm, css = json.loads(check.stdout.strip().splitlines()[-1])
    assert where.startswith(str(venv)) and "export function render" in esm
    assert ".ppnb-dash" in css


# A foreground cell that waits: items 0 and 1 end at once, the rest would sleep 30 s.
WAITING = """\
%%parallel x in range(8) --batch 1 -o part
import time
if x >= 2:
    time.sleep(30)
x"""


def _iopub_until(kc, until: float):
    """The kernel's iopub messages as they come, until the monotonic time `until`."""
    while time.monotonic() < until:
        try:
            yield kc.get_iopub_msg(timeout=0.2)
        except queue.Empty:
            continue


def _dashboard_comm(kc, msg_id: str, seen: list, until: float) -> str:
    """The comm id of the dashboard widget the cell `msg_id` opened."""
    for msg in _iopub_until(kc, until):
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        seen.append(msg)
        content = msg["content"]
        if msg["msg_type"] == "comm_open" and \
                content["data"]["state"].get("_model_name") == "AnyModel":
            return content["comm_id"]
    raise AssertionError(f"no dashboard widget opened: {text_of(seen)!r}")


def _wait_for_progress(kc, comm_id: str, completed: int, until: float) -> None:
    """Until the dashboard's state says `completed` items have ended."""
    for msg in _iopub_until(kc, until):
        content = msg["content"]
        if msg["msg_type"] == "comm_msg" and content["comm_id"] == comm_id:
            progress = content["data"].get("state", {}).get("progress", {})
            if progress.get("completed", 0) >= completed:
                return
    raise AssertionError(f"the dashboard never showed {completed} items ended")


def _reply_to(kc, msg_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        reply = kc.get_shell_msg(timeout=max(deadline - time.monotonic(), 0.01))
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]


def test_cancel_reaches_a_waiting_cell_which_ends_interrupted_and_drops_queued_cells(kernel):
    km, kc = kernel
    reply, outputs = execute(kc, "%load_ext pp_notebook\n%pp start 2", timeout=60)
    assert reply["status"] == "ok", text_of(outputs)
    cell = kc.execute(WAITING)
    comm_id = _dashboard_comm(kc, cell, [], time.monotonic() + 30)
    _wait_for_progress(kc, comm_id, 2, time.monotonic() + 30)
    queued = kc.execute("queued_cell_ran = True")  # as "Run All" queues the next cell
    time.sleep(0.5)
    clicked = time.monotonic()
    kc.shell_channel.send(kc.session.msg("comm_msg", {
        "comm_id": comm_id, "data": {"method": "custom", "content": {"kind": "cancel"}}}))
    content = _reply_to(kc, cell, 15)
    stopped_after = time.monotonic() - clicked
    assert content["status"] == "error" and content["ename"] == "RunInterrupted", content
    assert stopped_after < 2, f"the cell ended {stopped_after:.1f} s after the click"
    assert _reply_to(kc, queued, 15)["status"] == "aborted"  # dropped, not replayed

    reply, outputs = execute(kc, "print(part.status.tolist(), 'queued_cell_ran' in dir())")
    assert reply["status"] == "ok", text_of(outputs)
    assert text_of(outputs).strip() == f"{['ok'] * 2 + ['cancelled'] * 6} False"
    reply, outputs = execute(kc, "%pp stop")
    assert reply["status"] == "ok", text_of(outputs)


def test_messages_held_during_a_waiting_cell_run_after_it_in_order(kernel):
    km, kc = kernel
    reply, outputs = execute(kc, "%load_ext pp_notebook\n%pp start 2", timeout=60)
    assert reply["status"] == "ok", text_of(outputs)
    cell = kc.execute("%%parallel x in range(4) --batch 1 -o done\nimport time\n"
                      "time.sleep(1.0)\nx")
    _dashboard_comm(kc, cell, [], time.monotonic() + 30)
    first = kc.execute("order = ['first']")
    second = kc.execute("order.append('second')")
    info = kc.kernel_info()
    assert _reply_to(kc, cell, 30)["status"] == "ok"
    for msg_id in (first, second, info):
        assert _reply_to(kc, msg_id, 15)["status"] == "ok"
    reply, outputs = execute(kc, "print(order, done.status.tolist())")
    assert text_of(outputs).strip() == "['first', 'second'] ['ok', 'ok', 'ok', 'ok']"
    reply, outputs = execute(kc, "%pp stop")
    assert reply["status"] == "ok", text_of(outputs)
