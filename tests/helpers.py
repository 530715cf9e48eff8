"""Helpers shared by the tests that start real kernels, servers and browsers."""

import json
import sys
import threading
from pathlib import Path

import psutil


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
