"""The dashboard in a real JupyterLab and Notebook 7, in a real browser (Debian chromium via
playwright).

Each server runs on a free localhost port with a token and throwaway config, runtime, data,
settings and workspace folders. The tests: the quickstart notebook runs live and leaves its
final picture, which survives save, kernel shutdown and reload, and an untrusted copy; the
dashboard's hovers, failure tracebacks, engine highlight and Cancel during a foreground cell
of "Run All"; the light and dark themes' contrast, and Cancel of a background run; Notebook 7;
and the kernel's stop button during a `%%parallel` cell. The servers, their kernels, the
kernels' clusters and the browser are stopped even when a test fails. PP_UPDATE_SCREENSHOT=1
refreshes docs/dashboard.png and docs/dashboard-dark.png.
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
from contextlib import contextmanager
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
    """A call to the server's REST API, with the token."""
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


@contextmanager
def _server(tmp_path, app: str):
    """The URL of a Jupyter server (`lab`, or `notebook`: Notebook 7) whose root holds
    demo.ipynb; stopped at the end with its kernels, and any process it started (kernel,
    controller, engines) that outlives it."""
    root, state = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    _write_settings(state / "settings")
    shutil.copyfile(QUICKSTART, root / "demo.ipynb")
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(state / "config"),
               JUPYTER_RUNTIME_DIR=str(state / "runtime"),
               JUPYTER_DATA_DIR=str(state / "data"),
               JUPYTERLAB_SETTINGS_DIR=str(state / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"))
    log = (tmp_path / "jupyter.log").open("wb")
    own = (["--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"] if app == "lab"
           else ["--JupyterNotebookApp.expose_app_in_browser=True"])
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "jupyter"), app, "--no-browser", "--allow-root",
         "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}", *own],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    descendants = Descendants(server.pid)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "jupyter.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"jupyter {app} did not answer within 60 s"
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


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server (see _server)."""
    with _server(tmp_path, "lab") as base:
        yield base


@pytest.fixture
def notebook7(tmp_path):
    """A Notebook 7 server (see _server)."""
    with _server(tmp_path, "notebook") as base:
        yield base


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
          bars: [...document.querySelectorAll('.ppnb-dash .ppnb-fill')]
                .map(bar => bar.style.width)};
}"""

CONTRAST = """roots => {
  // Every visible text of the dashboards and pictures: its colour (SVG text: its fill, with
  // opacity) over the background it sits on, as WCAG's contrast ratio.
  const parse = text => {
    const m = /rgba?\\(([^)]+)\\)/.exec(text || '');
    if (!m) return null;
    const [r, g, b, a] = m[1].split(',').map(Number);
    return {r, g, b, a: a === undefined ? 1 : a};
  };
  const over = (top, bottom) => ({r: top.r * top.a + bottom.r * (1 - top.a),
    g: top.g * top.a + bottom.g * (1 - top.a), b: top.b * top.a + bottom.b * (1 - top.a), a: 1});
  const luminance = c => ['r', 'g', 'b'].map(k => c[k] / 255)
    .map(v => v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4))
    .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = el => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    return layers.reverse().reduce((bg, c) => over(c, bg), {r: 255, g: 255, b: 255, a: 1});
  };
  const results = [];
  for (const root of document.querySelectorAll(roots)) {
    for (const el of root.querySelectorAll('*')) {
      const text = [...el.childNodes].filter(n => n.nodeType === 3)
        .map(n => n.textContent.trim()).join(' ').trim();
      if (!text || !el.getClientRects().length) continue;
      const style = getComputedStyle(el);
      if (style.visibility === 'hidden' || el.closest('[hidden]')) continue;
      let opacity = 1;
      for (let e = el; e; e = e.parentElement) opacity *= Number(getComputedStyle(e).opacity);
      const fg = parse(el instanceof SVGElement ? style.fill : style.color);
      if (!fg) continue;
      const bg = background(el);
      const shown = over({...fg, a: fg.a * opacity}, bg);
      const [hi, lo] = [luminance(shown), luminance(bg)].sort((x, y) => y - x);
      results.push({text: text.slice(0, 40), ratio: (hi + 0.05) / (lo + 0.05)});
    }
  }
  return results;
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


def _open(page, url: str, path: str) -> None:
    """Open the notebook at `url` and wait for its kernel to be connected and idle."""
    page.goto(url)
    _wait_for(page, lambda s: s["path"] == path and s["kernel"] == "connected/idle", 60,
              f"{path}'s kernel to be connected and idle")


def _cells(page):
    """The code cells of the notebook in view (other open notebooks stay in the DOM)."""
    panel = page.evaluate("() => window.jupyterapp.shell.currentWidget.id")
    return page.locator(f"[id='{panel}'] .jp-CodeCell")


def _run_all(page) -> None:
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def _progress(state: dict) -> list[float]:
    return [float(w.rstrip("%")) for w in state["bars"] if w]


def _write_notebook(path: Path, cells: list[str]) -> None:
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(code) for code in cells],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}})
    nbformat.write(notebook, path)


def _outputs(page) -> list[list[dict]]:
    return page.evaluate("() => window.jupyterapp.shell.currentWidget.content.widgets"
                         ".filter(cell => cell.model.type === 'code')"
                         ".map(cell => cell.model.toJSON().outputs || [])")


def _low_contrast(page, roots: str) -> list[dict]:
    texts = page.evaluate(CONTRAST, roots)
    assert len(texts) > 10, texts  # the check saw the dashboards' text
    return [t for t in texts if t["ratio"] < 4.5]


def _screenshot(locator, tmp_path: Path, name: str) -> None:
    """A picture of `locator`; copied over docs/`name` only when PP_UPDATE_SCREENSHOT is set."""
    shot = tmp_path / name
    locator.screenshot(path=shot)
    assert shot.stat().st_size > 10_000  # a real picture of the widget, not a blank box
    if os.environ.get("PP_UPDATE_SCREENSHOT"):  # refresh README's pictures on purpose only
        shutil.copyfile(shot, REPO / "docs" / name)


def test_quickstart_runs_live_and_leaves_a_picture_that_survives_reload_and_distrust(
        lab, page, tmp_path):
    _open(page, f"{lab}/lab/tree/demo.ipynb?token={TOKEN}", "demo.ipynb")
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    _run_all(page)
    cells = _cells(page)
    live = cells.nth(2).locator(".ppnb-dash")
    state = _wait_for(page, lambda s: any(30 <= w < 100 for w in _progress(s)), 90,
                      "the dashboard to show a run under way")
    assert live.locator(".ppnb-engines tbody tr").count() == 2  # one row per engine
    assert live.locator(".ppnb-timeline rect.bar").count() > 0
    _screenshot(cells.nth(2), tmp_path, "dashboard.png")
    seen: list[dict] = []
    state = _wait_for(page, lambda s: all(c is not None for c in s["counts"])
                      and s["kernel"] == "connected/idle", 90, "every cell to run", seen)
    assert state["counts"] == list(range(1, 9))
    assert len({tuple(s["bars"]) for s in seen}) > 1 or seen[0]["bars"] == []  # it moved

    assert page.locator(".jp-OutputArea-output [data-mime-type='application/vnd.jupyter.stderr']"
                        ).count() == 0
    picture = cells.nth(2).locator(".ppnb-final")
    _check_picture(picture, trusted=True)
    assert cells.nth(2).locator(".ppnb-dash").count() == 0  # the widget was replaced
    frame = cells.nth(3).locator(".jp-OutputArea-output table.dataframe")
    assert frame.is_visible() and frame.locator("tbody tr").count() == 5
    figure = cells.nth(4).locator(".jp-OutputArea-output img")
    assert figure.get_attribute("src").startswith("data:image/png")

    # Saved, kernel shut down, page reloaded: the picture is there, no widget error.
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    saved = tmp_path / "root" / "demo.ipynb"
    assert _wait_until_saved(saved)
    outputs = [o for cell in nbformat.read(saved, as_version=4).cells
               for o in cell.get("outputs", [])]
    assert not [o for o in outputs if WIDGET_VIEW in o.get("data", {})]
    for kernel in json.loads(_api(f"{lab}/api/kernels")):
        _api(f"{lab}/api/kernels/{kernel['id']}", method="DELETE")
    page.reload()
    _wait_for(page, lambda s: s["path"] == "demo.ipynb", 60, "the notebook to reopen")
    page.locator(".ppnb-final").first.wait_for(timeout=60_000)
    _check_picture(_cells(page).nth(2).locator(".ppnb-final"),
                   trusted=True)
    assert "Error displaying widget" not in page.locator("body").inner_text()

    # An untrusted copy (its content no longer matches a signature): still readable.
    notebook = nbformat.read(saved, as_version=4)
    notebook.metadata["copied"] = True
    nbformat.write(notebook, tmp_path / "root" / "untrusted.ipynb")
    _open(page, f"{lab}/lab/tree/untrusted.ipynb?token={TOKEN}", "untrusted.ipynb")
    picture = _cells(page).nth(2).locator(".ppnb-final")
    picture.wait_for(timeout=60_000)
    _check_picture(picture, trusted=False)
    assert "Error displaying widget" not in page.locator("body").inner_text()


def _wait_until_saved(path: Path, timeout_s: float = 15) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cells = nbformat.read(path, as_version=4).cells
        if any(cell.get("outputs") for cell in cells):
            return True
        time.sleep(0.2)
    return False


def _check_picture(picture, trusted: bool) -> None:
    """The quickstart's final picture: summary, engines, both charts, the failure."""
    text = picture.inner_text()
    assert "41 tasks · 40 ok · 1 failed (1 error)" in text and "Per engine" in text
    failure = picture.locator("details", has_text="rates must be positive")
    failure.locator("summary").click()
    assert "Traceback" in failure.locator("pre").inner_text() or \
        "ValueError" in failure.locator("pre").inner_text()
    charts, images = picture.locator("svg"), picture.locator("img")
    assert images.count() == 2 and images.first.evaluate("img => img.naturalWidth") > 100
    if trusted:  # inline SVG exactly over each image: its bars hover with <title>s
        assert charts.count() == 2 and charts.first.is_visible()
        assert charts.first.bounding_box() == images.first.bounding_box()
        assert picture.locator("svg rect title").count() >= 41
    else:  # sanitised: no SVG left, the images show, the SVG's leftover text is invisible
        assert charts.count() == 0 and images.first.is_visible()
        overlay = images.first.locator("xpath=following-sibling::div")
        assert overlay.evaluate("div => getComputedStyle(div).color") == "rgba(0, 0, 0, 0)"


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _point_at(page, locator, y: float | None = None) -> None:
    """Move the mouse over `locator` (`y` px below its top, else its middle); the widget
    redraws every frame, so its element may be replaced while we look."""
    for _ in range(50):
        box = locator.bounding_box()
        if box is not None:
            page.mouse.move(box["x"] + box["width"] / 2,
                            box["y"] + (box["height"] / 2 if y is None else y))
            return
        time.sleep(0.05)
    raise AssertionError(f"{locator} never had a box")

CANCELLED_CELLS = [
    "%load_ext pp_notebook\n%pp start 2",
    "%%parallel x in range(8) --batch 1 -o part\nimport time\nif x == 1:\n"
    "    raise ValueError('one is bad')\nif x >= 2:\n    time.sleep(60)\nx",
    'print("after", len(part))',
    "x = 1",
]


def test_dashboard_interactions_and_cancel_stop_a_foreground_cell_and_run_all(lab, page,
                                                                             tmp_path):
    """While a `%%parallel` cell of "Run All" waits: hover a bar, open a failure's traceback,
    highlight an engine; Cancel then ends the cell as interrupted within a second, with the
    finished rows kept, and the queued cells are dropped."""
    _write_notebook(tmp_path / "root" / "cancel.ipynb", CANCELLED_CELLS)
    _open(page, f"{lab}/lab/tree/cancel.ipynb?token={TOKEN}", "cancel.ipynb")
    _run_all(page)
    _wait_for(page, lambda s: any(w >= 25 for w in _progress(s)), 60,
              "items 0 and 1 of the %%parallel cell to end")
    dash = _cells(page).nth(1).locator(".ppnb-dash")
    dash.locator(".ppnb-timeline rect.bar.s-ok").first.wait_for()

    # the top row of the failed bar: the running bar after it starts 2 px lower. The time axis
    # grows every frame, so a frame drawn between reading the bar's box and moving there can
    # leave the pointer beside it: point again until the move lands on the bar.
    tip = dash.locator(".ppnb-tip")
    for _ in range(20):
        _point_at(page, dash.locator(".ppnb-timeline rect.bar.s-error").first, y=0.5)
        if tip.is_visible() and tip.inner_text().startswith("task 1 "):
            break
        time.sleep(0.1)
    tip.wait_for(state="visible", timeout=5_000)
    assert tip.inner_text().startswith("task 1 · 1 · engine ") and \
        tip.inner_text().endswith(" · error")
    _point_at(page, dash.locator(".ppnb-hist rect.bin").first)
    page.wait_for_function("() => /: [0-9]+ tasks?$/.test("
                           "document.querySelector('.ppnb-dash .ppnb-tip').textContent)")

    dash.locator(".ppnb-failures li[data-task='1']").click()  # answered while the cell waits
    detail = dash.locator(".ppnb-detail pre")
    page.wait_for_function("() => (document.querySelector('.ppnb-dash .ppnb-detail pre') || {})"
                           ".textContent?.includes('one is bad')", timeout=5_000)
    assert "Traceback" in detail.inner_text() or "line" in detail.inner_text()

    engine = dash.locator(".ppnb-engines tbody tr").first
    engine.click()
    bars = dash.locator(".ppnb-timeline rect.bar")
    picked = dash.locator(".ppnb-timeline rect.bar.picked").count()
    dimmed = dash.locator(".ppnb-timeline rect.bar.dim").count()
    assert picked >= 1 and picked + dimmed == bars.count(), (picked, dimmed, bars.count())
    assert dash.locator(".ppnb-preview tbody tr").count() >= 2  # results so far

    state = page.evaluate(NOTEBOOK_STATE)
    assert state["counts"][1:] == [None] * 3 and state["running"][1:] == [True] * 3, state
    dash.locator(".ppnb-cancel").click()
    clicked = time.monotonic()
    _wait_for(page, lambda s: s["counts"][1] is not None, 10, "the cancelled cell to end")
    ended_after = time.monotonic() - clicked
    assert ended_after < 1.0, f"the cell ended {ended_after:.2f} s after Cancel"
    _wait_for(page, lambda s: not any(s["running"]) and s["kernel"] == "connected/idle", 10,
              "the queued cells to be dropped")
    time.sleep(1)  # were (c) and (d) to run after all, they would have started by now
    state = page.evaluate(NOTEBOOK_STATE)
    assert state["counts"] == [1, 2, None, None] and not any(state["running"]), state
    outputs = _outputs(page)
    assert [o["ename"] for o in outputs[1] if o["output_type"] == "error"] == ["RunInterrupted"]
    assert outputs[2:] == [[], []], outputs[2:]
    picture = _cells(page).nth(1).locator(".ppnb-final")
    assert "8 tasks · 1 ok · 1 failed (1 error) · 6 cancelled" in picture.inner_text()

    check = page.evaluate(KERNEL_EXECUTE, 'print(part["status"].tolist(), "x" in dir())')
    assert check == {"status": "ok", "text": str(["ok", "error"] + ["cancelled"] * 6)
                     + " False\n"}, check
    stop = page.evaluate(KERNEL_EXECUTE, "%pp stop")
    assert stop["status"] == "ok" and "stopped cluster" in stop["text"], stop


THEMED_CELLS = [
    "%load_ext pp_notebook\n%pp start 2",
    "%%parallel x in range(12) -o small\nif x == 3:\n    raise ValueError('three')\nx",
    "%%parallel x in range(40) --batch 1 --background -o slow\nimport time\n"
    "if x == 0:\n    raise ValueError('zero')\ntime.sleep(0.2 if x < 4 else 60)\nx",
]


def test_themes_keep_text_readable_and_cancel_stops_a_background_run(lab, page, tmp_path):
    """The live widget (a background run) and a final picture, in the light and the dark
    theme: every text at 4.5:1 or more. Then Cancel ends the background run."""
    _write_notebook(tmp_path / "root" / "themes.ipynb", THEMED_CELLS)
    _open(page, f"{lab}/lab/tree/themes.ipynb?token={TOKEN}", "themes.ipynb")
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    _run_all(page)
    _wait_for(page, lambda s: all(c is not None for c in s["counts"])
              and any(w >= 10 for w in _progress(s)), 60,
              "every cell to run, and the background run to get under way")
    cells = _cells(page)
    cells.nth(2).locator(".ppnb-failures li").first.wait_for()
    cells.nth(1).locator(".ppnb-final").wait_for()
    roots = ".ppnb-dash, .ppnb-final"
    assert _low_contrast(page, roots) == []
    for theme in ("JupyterLab Dark", "JupyterLab Light"):
        page.evaluate("theme => window.jupyterapp.commands.execute("
                      "'apputils:change-theme', {theme})", theme)
        page.wait_for_function("theme => document.body.dataset.jpThemeName === theme", arg=theme)
        page.wait_for_timeout(300)  # the theme's stylesheet applied
        assert _low_contrast(page, roots) == [], theme
        if theme == "JupyterLab Dark":
            _screenshot(cells.nth(2), tmp_path, "dashboard-dark.png")

    cells.nth(2).locator(".ppnb-cancel").click()  # the kernel is idle: no cell waits
    picture = cells.nth(2).locator(".ppnb-final")
    # Usually 1-2 s; under load an engine interrupted outside its task is ended after
    # CANCEL_GRACE_S and the run then waits (bounded) for its replacement to join.
    picture.wait_for(timeout=40_000)
    assert " cancelled" in picture.inner_text()
    check = page.evaluate(KERNEL_EXECUTE, 'print(slow.result()["status"].value_counts()'
                          '["cancelled"] > 30)\n%pp stop')
    assert check["status"] == "ok" and check["text"].startswith("True"), check


def test_notebook_7_shows_the_live_dashboard_and_its_final_picture(notebook7, page, tmp_path):
    _write_notebook(tmp_path / "root" / "nb7.ipynb", [
        "%load_ext pp_notebook\n%pp start 2",
        "%%parallel x in range(24) --batch 1 -o out\nimport time\ntime.sleep(0.15)\n"
        "if x == 5:\n    raise ValueError('five')\nx",
        "%pp stop"])
    _open(page, f"{notebook7}/notebooks/nb7.ipynb?token={TOKEN}", "nb7.ipynb")
    _run_all(page)
    seen: list[dict] = []
    _wait_for(page, lambda s: all(c is not None for c in s["counts"])
              and s["kernel"] == "connected/idle", 60, "every cell to run", seen)
    assert any(0 < w < 100 for s in seen for w in _progress(s)), "no live frame drawn"
    picture = _cells(page).nth(1).locator(".ppnb-final")
    assert "24 tasks · 23 ok · 1 failed (1 error)" in picture.inner_text()
    assert picture.locator("svg").first.is_visible()
    assert "Error displaying widget" not in page.locator("body").inner_text()


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
    _write_notebook(tmp_path / "root" / "interrupted.ipynb", INTERRUPTED_CELLS)
    _open(page, f"{lab}/lab/tree/interrupted.ipynb?token={TOKEN}", "interrupted.ipynb")
    _run_all(page)
    # The dashboard's bar counts finished items: 2 of 8 (items 0 and 1) is 25%.
    state = _wait_for(page, lambda s: any(w >= 25 for w in _progress(s)), 60,
                      "items 0 and 1 of the %%parallel cell to end")
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

    outputs = _outputs(page)
    errors = [o for o in outputs[1] if o["output_type"] == "error"]
    assert [e["ename"] for e in errors] == ["RunInterrupted"], outputs[1]
    assert outputs[2:] == [[], []], outputs[2:]
    error = _cells(page).nth(1).locator(
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
