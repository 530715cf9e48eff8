"""The dashboard in a real JupyterLab and a real browser (Debian chromium via playwright).

JupyterLab runs on a free localhost port with a token and throwaway config, runtime, settings
and workspace folders; it runs the quickstart notebook (a `%%parallel` sweep of 41 items, one
failing, with the dashboard, the DataFrame and `run.plot()`), which stops its cluster; and a
notebook whose "Run All" is interrupted during a `%%parallel` cell. JupyterLab, its kernel, the
kernel's cluster and the browser are stopped even when the test fails.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from helpers import Descendants

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]
TOKEN = "pp-notebook-browser-test"
QUICKSTART = REPO / "notebooks" / "quickstart.ipynb"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"no chromium at {CHROMIUM}: run `make system` (`make test` runs it too)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, method: str = "GET") -> bytes:
    request = urllib.request.Request(url, method=method,
                                     headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read()


def _write_settings(settings: Path) -> None:
    """All cells in the DOM (no virtual scrolling), and no news toast."""
    for plugin, values in {"notebook-extension/tracker": {"windowingMode": "none"},
                           "apputils-extension/notification": {"fetchNews": "false"}}.items():
        path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture
def lab(tmp_path):
    """The URL of a JupyterLab server whose root holds demo.ipynb; stopped at the end with
    its kernels, and any process it started (kernel, controller, engines) that outlives it."""
    root, state = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    _write_settings(state / "settings")
    shutil.copyfile(QUICKSTART, root / "demo.ipynb")
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(state / "config"),
               JUPYTER_RUNTIME_DIR=str(state / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(state / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"))
    log = (tmp_path / "jupyter.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--allow-root",
         "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    descendants = Descendants(server.pid)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "jupyter.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "JupyterLab did not answer within 60 s"
            try:
                _api(f"{base}/api/status")
                break
            except OSError:
                time.sleep(0.2)
        yield base
    finally:
        descendants.record()
        _stop_server(server, base)
        descendants.end_survivors()
        log.close()


def _stop_server(server: subprocess.Popen, base: str) -> None:
    """Shut the server (and so its kernels) down, then end its process group."""
    try:
        _api(f"{base}/api/shutdown", method="POST")
        server.wait(15)
    except (OSError, subprocess.TimeoutExpired):
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
            server.wait(5)
            break
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def page(tmp_path):
    """A chromium page, closed at the end even on failure."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1200, "height": 1800})
        finally:
            browser.close()


NOTEBOOK_STATE = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.sessionContext || !panel.content) return null;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return {path: panel.context.path,
          kernel: kernel ? kernel.connectionStatus + '/' + kernel.status : 'none',
          counts: panel.content.widgets.filter(c => c.model.type === 'code')
                                       .map(c => c.model.executionCount),
          running: panel.content.widgets.filter(c => c.model.type === 'code')
                                        .map(c => c.model.executionState === 'running'),
          bars: [...document.querySelectorAll('.widget-hprogress .progress-bar')]
                .map(bar => bar.style.width)};
}"""


def _wait_for(page, predicate, timeout_s: float, what: str, seen: list | None = None) -> dict:
    """Poll the notebook's state until `predicate` holds; each state is added to `seen`."""
    deadline = time.monotonic() + timeout_s
    state = None
    while time.monotonic() < deadline:
        state = page.evaluate(NOTEBOOK_STATE)
        if seen is not None and state:
            seen.append(state)
        if state and predicate(state):
            return state
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s:g} s (last state: {state})")


def test_dashboard_runs_live_in_jupyterlab_and_leaves_summary_table_and_plot(lab, page,
                                                                            tmp_path):
    page.goto(f"{lab}/lab/tree/demo.ipynb?token={TOKEN}")
    _wait_for(page, lambda s: s["path"] == "demo.ipynb" and s["kernel"] == "connected/idle",
              60, "the notebook's kernel to be connected and idle")
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    seen: list[dict] = []
    state = _wait_for(page, lambda s: all(c is not None for c in s["counts"])
                      and s["kernel"] == "connected/idle", 90, "every cell to run", seen)
    assert state["counts"] == list(range(1, 9))
    widths = [float(w.rstrip("%")) for s in seen for w in s["bars"] if w]
    assert any(0 < w < 100 for w in widths), f"no frame drawn while running: {widths}"

    cells = page.locator(".jp-Notebook .jp-CodeCell")
    assert page.locator(".jp-OutputArea-output [data-mime-type='application/vnd.jupyter.stderr']"
                        ).count() == 0
    dashboard = cells.nth(2).locator(".jp-OutputArea-output").first
    dashboard.locator(".widget-hprogress").wait_for(state="visible", timeout=15_000)
    dashboard.get_by_text("100%", exact=True).wait_for(timeout=15_000)
    assert dashboard.locator(".widget-hprogress .progress-bar").evaluate(
        "bar => bar.style.width") == "100%"
    engine_table = dashboard.locator("table", has=page.locator("th", has_text="CPU"))
    assert engine_table.locator("tr:has(td)").count() == 2  # one row per engine
    assert "41/41 done · 1 failed" in dashboard.inner_text()
    assert engine_table.locator("td b", has_text="1").count() == 1  # the engine that failed it
    assert dashboard.get_by_text("40 ok · 1 failed (1 error)").is_visible()  # the summary

    failures = cells.nth(2).locator(".jp-OutputArea-output").nth(1)  # the failure report
    assert "rates must be positive" in failures.inner_text()

    frame = cells.nth(3).locator(".jp-OutputArea-output table.dataframe")
    assert frame.is_visible() and frame.locator("tbody tr").count() == 5
    figure = cells.nth(4).locator(".jp-OutputArea-output img")
    assert figure.is_visible()
    assert figure.get_attribute("src").startswith("data:image/png")
    assert figure.evaluate("img => img.naturalWidth") > 400

    shot = tmp_path / "dashboard.png"
    cells.nth(2).screenshot(path=shot)
    page.screenshot(path=tmp_path / "lab.png")
    assert shot.stat().st_size > 10_000  # a real picture of the widget, not a blank box
    if os.environ.get("PP_UPDATE_SCREENSHOT"):  # refresh README's picture on purpose only
        shutil.copyfile(shot, REPO / "docs" / "dashboard.png")


INTERRUPTED_CELLS = [
    "%load_ext pp_notebook\n%pp start 2",
    "%%parallel x in range(8) --batch 1 -o part\nimport time\nif x >= 2:\n"
    "    time.sleep(60)\nx",
    'print("after", len(part))',
    "x = 1",
]

KERNEL_EXECUTE = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, store_history: false});
  let text = '';
  future.onIOPub = msg => { if (msg.header.msg_type === 'stream') text += msg.content.text; };
  const reply = await future.done;
  return {status: reply.content.status, text};
}"""


def test_interrupting_a_parallel_cell_stops_run_all_there(lab, page, tmp_path):
    """The stop button during a `%%parallel` cell of "Run All": that cell ends with
    RunInterrupted, the cells after it do not run, and what finished is kept in `part`."""
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(code) for code in INTERRUPTED_CELLS],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}})
    nbformat.write(notebook, tmp_path / "root" / "interrupted.ipynb")
    page.goto(f"{lab}/lab/tree/interrupted.ipynb?token={TOKEN}")
    _wait_for(page, lambda s: s["path"] == "interrupted.ipynb"
              and s["kernel"] == "connected/idle", 60,
              "the notebook's kernel to be connected and idle")
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    # The dashboard's bar counts finished items: 2 of 8 (items 0 and 1) is 25%.
    state = _wait_for(page, lambda s: any(w and float(w.rstrip("%")) >= 25 for w in s["bars"]),
                      60, "items 0 and 1 of the %%parallel cell to end")
    assert state["counts"][1:] == [None] * 3 and state["running"][1:] == [True] * 3, state
    # The notebook toolbar's stop button (Lab 4 has no `kernel:interrupt` command).
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:interrupt-kernel')")
    # Not the kernel's status alone: Lab shows it idle while a cell with a widget still runs.
    _wait_for(page, lambda s: s["counts"][1] is not None and not any(s["running"])
              and s["kernel"] == "connected/idle", 10,
              "the interrupted cell to end, and the queued cells with it")
    time.sleep(1)  # were (c) and (d) to run after all, they would have started by now
    state = page.evaluate(NOTEBOOK_STATE)
    assert state["counts"] == [1, 2, None, None] and not any(state["running"]), state

    outputs = page.evaluate("() => window.jupyterapp.shell.currentWidget.content.widgets"
                            ".map(cell => cell.model.toJSON().outputs || [])")
    errors = [o for o in outputs[1] if o["output_type"] == "error"]
    assert [e["ename"] for e in errors] == ["RunInterrupted"], outputs[1]
    assert outputs[2:] == [[], []], outputs[2:]
    error = page.locator(".jp-Notebook .jp-CodeCell").nth(1).locator(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
        has_text="RunInterrupted")
    assert error.inner_text().startswith("RunInterrupted: the run was interrupted: 2 of 8 "
                                         "tasks had ended and are kept, 6 are marked "
                                         "`cancelled`; the results so far: `part`")

    # The kernel answers at once, holds what finished, and never ran (d).
    check = page.evaluate(KERNEL_EXECUTE, 'print(part["status"].tolist(), "x" in dir())')
    assert check == {"status": "ok",
                     "text": str(["ok"] * 2 + ["cancelled"] * 6) + " False\n"}, check
    stop = page.evaluate(KERNEL_EXECUTE, "%pp stop")
    assert stop["status"] == "ok" and "stopped cluster" in stop["text"], stop
