"""Shared fixtures: one real local ipyparallel cluster for the whole session."""

import pytest

import pp_notebook as pp

from helpers import ENGINES, wait_until


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
