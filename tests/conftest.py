"""Shared fixtures: one real local ipyparallel cluster for the whole session, and a real kernel
of this interpreter for the tests that drive one."""

import psutil
import pytest
from jupyter_client.manager import start_new_kernel

import pp_notebook as pp

from helpers import ENGINES, Descendants, this_interpreter_kernel, wait_until

KERNEL = "pp-notebook-kernel-test"


@pytest.fixture(scope="session")
def session_cluster():
    """The kernel's cluster with 2 local engines, stopped at the end even on failure."""
    pp.start(ENGINES)
    yield pp.cluster.current()
    pp.stop()


@pytest.fixture
def own_cluster():
    """For a test that starts a cluster of its own (another launcher): the session's cluster,
    if any, is set aside meanwhile; the test's is stopped at the end, even on failure."""
    previous = pp.cluster.swap(None)
    try:
        yield
    finally:
        pp.stop()
        pp.cluster.swap(previous)


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



@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """(manager, client) of a kernel running this interpreter; at the end its cluster is
    stopped, the kernel shut down and any process it started that survives is killed."""
    this_interpreter_kernel(tmp_path, monkeypatch, KERNEL)
    try:
        km, kc = start_new_kernel(kernel_name=KERNEL, startup_timeout=60, cwd=str(tmp_path))
    except RuntimeError as exc:  # the kernel did not start or answer: nothing to test
        pytest.skip(f"a kernel of this interpreter could not start: {exc}")
    descendants = Descendants(km.provisioner.pid)
    leftover: list[psutil.Process] = []
    try:
        yield km, kc
    finally:
        descendants.record()
        try:  # a failed test may leave the run going: stop it, then the cluster
            if km.is_alive():
                km.interrupt_kernel()
                kc.execute_interactive("import pp_notebook; pp_notebook.stop()", timeout=20,
                                       output_hook=lambda msg: None)
        except Exception:
            pass
        descendants.record()
        kc.stop_channels()
        km.shutdown_kernel(now=False)
        leftover = descendants.end_survivors()
    assert not leftover, f"still running after the kernel's shutdown: {leftover}"


# -- time per tier (tests/unit, cluster, faults, browser), printed at the end ----------------

_tier_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report):
    parts = report.nodeid.split("/")
    tier = parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"
    _tier_seconds[tier] = _tier_seconds.get(tier, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if _tier_seconds:
        terminalreporter.write_line("time per tier: " + " · ".join(
            f"{tier} {seconds:.0f} s" for tier, seconds in _tier_seconds.items()))
