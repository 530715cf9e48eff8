"""The end of a run as plain HTML: it stays in the saved notebook and shows on GitHub and in
nbviewer, where no widget runs. Tables are pandas' own, so they look like every DataFrame."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

import pandas as pd

from . import fmt
from .records import failure_detail

if TYPE_CHECKING:
    from .records import RunSummary


def summary_html(summary: RunSummary, *, engines: bool = True) -> str:
    """Headline figures, the per-engine table (unless `engines=False`) and the slowest tasks."""
    failed = failure_detail(summary.counts)
    short = summary.too_short  # microsecond tasks: speedup and efficiency would mislead
    figures = pd.DataFrame([{
        "tasks": summary.tasks, "ok": summary.counts.get("ok", 0),
        "failed": f"{summary.failed} ({failed})" if failed else "0",
        "cancelled": summary.counts.get("cancelled", 0),
        "wall time": fmt.seconds(summary.wall_s), "summed task time": fmt.seconds(summary.task_s),
        "speedup": "–" if short else f"{summary.speedup:.2f}×", "engines": summary.engines,
        "efficiency": "–" if short else f"{summary.efficiency:.0%}"}])
    parts = [f"<p><b>pp_notebook run</b>: {escape(summary.line())}</p>", _table(figures)]
    if engines and len(summary.per_engine):
        table = summary.per_engine
        parts += ["<p><b>Per engine</b></p>", _table(pd.DataFrame({
            "engine": table.index, "host": table["host"], "tasks": table["tasks"],
            "failed": table["failed"], "cancelled": table["cancelled"],
            "busy": table["busy_s"].map(fmt.seconds),
            "utilisation": table["utilisation"].map("{:.0%}".format),
            "failure rate": table["failure_rate"].map("{:.0%}".format)}))]
    if len(summary.slowest):
        slow = summary.slowest
        parts += ["<p><b>Slowest tasks</b></p>", _table(pd.DataFrame({
            "task": slow["task"], "duration": slow["duration_s"].map(fmt.seconds),
            "engine": slow["engine"], "status": slow["status"]}))]
    return "\n".join(parts)


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0, escape=True)
