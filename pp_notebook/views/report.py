"""The failures of a finished run as a cell shows them: a short table, tracebacks one click away.

Text (terminals, saved notebooks' plain output): task, item, status, error, and where to find
the full tracebacks. HTML: the same rows, each error a `<details>` that opens on its traceback.
"""

from __future__ import annotations

import html

import pandas as pd

from ..fmt import short_repr
from ..records import error_text

MAX_ROWS = 20
TRACEBACKS_HINT = "full tracebacks: pp_notebook.last_run().errors()"


class FailureReport:
    """The failed tasks of a run (`run.errors()`), at most MAX_ROWS of them."""

    def __init__(self, errors: pd.DataFrame) -> None:
        self.errors = errors

    def __bool__(self) -> bool:
        return len(self.errors) > 0

    def _title(self) -> str:
        n = len(self.errors)
        return f"{n} failed task{'s' if n != 1 else ''} ({TRACEBACKS_HINT})"

    def _rows(self) -> pd.DataFrame:
        rows = self.errors.head(MAX_ROWS)
        return pd.DataFrame({
            "task": rows.index,
            "item": [short_repr(item, 60) for item in rows["item"]],
            "status": rows["status"],
            "error": [error_text(t, m) or "" for t, m in zip(rows["error_type"], rows["error"])],
            "traceback": rows["traceback"],
        })

    def _more(self) -> str:
        hidden = len(self.errors) - MAX_ROWS
        return f"… and {hidden} more" if hidden > 0 else ""

    def __repr__(self) -> str:
        table = self._rows().drop(columns="traceback").to_string(index=False)
        return "\n".join(filter(None, [self._title(), table, self._more()]))

    def _repr_html_(self) -> str:
        cells = []
        for row in self._rows().itertuples(index=False):
            error = html.escape(row.error)
            if row.traceback:
                error = (f"<details><summary>{error}</summary>"
                         f"<pre>{html.escape(row.traceback)}</pre></details>")
            cells.append(f"<tr><td>{row.task}</td><td><code>{html.escape(row.item)}</code></td>"
                         f"<td>{row.status}</td><td style='text-align:left'>{error}</td></tr>")
        more = f"<p>{self._more()}</p>" if self._more() else ""
        return (f"<p>{html.escape(self._title())}</p><table><thead><tr><th>task</th><th>item"
                f"</th><th>status</th><th>error</th></tr></thead><tbody>{''.join(cells)}"
                f"</tbody></table>{more}")
