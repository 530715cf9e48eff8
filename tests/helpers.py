"""Helpers shared by the tests that start real kernels, servers and browsers."""

import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import pp_notebook as pp

ENGINES = 2
"""Engines of the session's cluster (the `cluster` fixture)."""


class Descendants:
    """`pid` and every process started under it while the test runs, by pid and start time
    (a kernel's cluster outlives it briefly, detached from it once it stops it)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.seen: dict[tuple[int, float], psutil.Process] = {
            (pid, self.root.create_time()): self.root}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            self.record()

    def record(self) -> None:
        try:
            for child in self.root.children(recursive=True):
                self.seen.setdefault((child.pid, child.create_time()), child)
        except psutil.Error:
            pass

    def end_survivors(self, timeout: float = 10) -> list[psutil.Process]:
        """Stop watching; give the recorded processes `timeout` s to exit, then kill the rest
        (psutil checks pid and start time: never a reused pid). Returns those killed."""
        self._stop.set()
        self._thread.join()
        alive = [p for p in self.seen.values() if running(p)]
        _, leftover = psutil.wait_procs(alive, timeout=timeout)
        leftover = [p for p in leftover if running(p)]
        for process in leftover:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        return leftover


def running(process: psutil.Process) -> bool:
    """Alive and not a zombie (this machine's init may not reap orphans at once)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def this_interpreter_kernel(tmp_path: Path, monkeypatch, name: str) -> str:
    """A kernelspec `name` running this interpreter, found first through a temporary
    JUPYTER_PATH, with a temporary IPYTHONDIR (so the cluster's profile is the test's too)."""
    spec = tmp_path / "jupyter" / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": name, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    return name


def engine_pids(cluster) -> dict[int, int]:
    cluster.wait_for_info()
    return {e["id"]: e["pid"] for e in pp.status()["engines"]}


def held_runs(cluster) -> list[set[str]]:
    """The keys of the runs whose functions each live engine holds."""
    from pp_notebook.engine import leftovers

    ids = cluster.live_ids()
    return [set(state["runs"]) for state in cluster.client[ids].apply_sync(leftovers)]


def wait_until(predicate, timeout=30.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def process_tree(pid: int) -> list[psutil.Process]:
    """The process `pid` and its descendants, as far as they are still there."""
    try:
        process = psutil.Process(pid)
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return []


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def ipython_shell():
    """A real IPython shell with the extension loaded (history in memory, not in ~/.ipython)."""
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)
    try:
        shell.run_line_magic("load_ext", "pp_notebook")
        yield shell
    finally:
        InteractiveShell.clear_instance()


def watched(run):
    """A dashboard that watched `run` to its end and drew its summary."""
    from pp_notebook.views.dashboard import Dashboard

    dashboard = Dashboard(run).start()
    try:
        run.wait()
    finally:
        dashboard.stop()
    return dashboard


def execute(kc, code: str, timeout: float = 30) -> tuple[dict, list[dict]]:
    """Run `code`; its execute_reply content and the iopub messages it caused."""
    outputs: list[dict] = []
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=outputs.append)
    return reply["content"], outputs


def text_of(outputs: list[dict]) -> str:
    """What the messages showed as text: streams, results and displays, errors."""
    parts = []
    for msg in outputs:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            parts.append(content["text"])
        elif kind in ("execute_result", "display_data", "update_display_data"):
            parts.append(content["data"].get("text/plain", ""))
        elif kind == "error":
            parts.append(f"{content['ename']}: {content['evalue']}")
    return "".join(parts)
