"""Fixtures of the fault suite, and the table of its figures at the end of the session.

Each fault case reports how long the failure took to be noticed (from the fault's injection
until the run had ended or requeued what it hit) and how many OTHER tasks lost their result;
`pytest_terminal_summary` prints them as one table, so they appear in every test run's output.
A case records its figure before asserting, so a failing case still shows what it measured.
"""

from __future__ import annotations

import pytest

_FIGURES = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def fault_figures(pytestconfig):
    """`record(fault, detect_s, lost, outcome="")`: one row of the table at the end."""
    rows = pytestconfig.stash.setdefault(_FIGURES, [])

    def record(fault: str, detect_s: float | None, lost: int, outcome: str = "") -> None:
        rows.append((fault, detect_s, lost, outcome))

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = config.stash.get(_FIGURES, None)
    if not rows:
        return
    header = ("fault", "detect s", "tasks lost", "outcome")
    cells = [(f, "-" if d is None else f"{d:.2f}", str(lost), out) for f, d, lost, out in rows]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(3)]
    terminalreporter.section("fault figures")
    for row in [header, *cells]:
        terminalreporter.write_line(" | ".join(
            [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2]), row[3]]))
