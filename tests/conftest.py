"""Shared fixtures: one real local ipyparallel cluster for the whole session."""

import os
import time
from contextlib import contextmanager

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import pp_notebook as pp

ENGINES = 2


@pytest.fixture(scope="session")
def session_cluster():
    """The kernel's cluster with 2 local engines, stopped at the end even on failure."""
    pp.start(ENGINES)
    yield pp.cluster.current()
    pp.stop()


@pytest.fixture
def cluster(session_cluster):
    """The session's cluster with exactly 2 live, answering engines before each test.

    Kill tests leave a replacement engine starting and a dead one unregistering: wait for
    both to settle rather than scaling down, which could stop a healthy engine.
    """
    def settled():
        ids = session_cluster.live_ids()
        if len(ids) != ENGINES:
            return False
        try:
            session_cluster.client[ids].apply_async(int).get(timeout=5)
        except Exception:
            return False
        return len(session_cluster.live_ids()) == ENGINES

    if not wait_until(settled, 30, interval=0.1):
        session_cluster.scale(ENGINES)
    session_cluster.wait_for_info()
    return session_cluster


def engine_pids(cluster) -> dict[int, int]:
    cluster.wait_for_info()
    return {e["id"]: e["pid"] for e in pp.status()["engines"]}


def wait_until(predicate, timeout=30.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


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
    shell.run_line_magic("load_ext", "pp_notebook")
    try:
        yield shell
    finally:
        InteractiveShell.clear_instance()
