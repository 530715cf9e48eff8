"""What bench_core.py writes: its rows, as Markdown tables to paste into a README and as JSON.

Only the standard library here: bench_core.py imports this at its top, which dask's and
loky's workers re-run when they start.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One runner on one workload. Times are for the whole workload: a runner that ran fewer
    items (`n` < the workload's) has them scaled up by `scale`; `times_s` are as measured."""

    runner: str
    kind: str  # "pp" | "peer" | "reference"
    workload: str
    n: int
    times_s: list[float]
    scale: float = 1.0
    median_s: float = 0.0
    min_s: float = 0.0
    tasks_per_s: float | None = None
    speedup: float | None = None
    efficiency: float | None = None
    memory_of: str = "workers"  # whose RSS was sampled: "workers" | "client"
    peak_rss_mib: float | None = None  # the summed RSS, at its highest in any round
    rss_growth_mib: float | None = None  # the most it rose above its value before a round
    kib_per_task: float | None = None  # growth per task in flight
    bound_ratio: float | None = None  # median time / the list-scheduling bound
    tail_s: float | None = None  # median, from 95% of tasks done to 100%


NUMBER = re.compile(r"n/a|[-+]?[\d.,]+%?( \(×[\d.]+\))?")


def markdown_table(headers: list[str], lines: list[list[str]]) -> str:
    """A Markdown pipe table, padded so that it also reads well as plain text; columns of
    numbers are aligned right, columns of text left."""
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    right = [all(NUMBER.fullmatch(line[i]) for line in lines) for i in range(len(headers))]

    def render(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if r else c.ljust(w)
                                 for c, w, r in zip(cells, widths, right)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if r else "-") for w, r in zip(widths, right)) + "|"
    return "\n".join([render(headers), rule, *map(render, lines)])


def cell(value: Any, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def startup_table(rows: list[Row]) -> str:
    return markdown_table(["runner", "median s", "min s", "rounds"],
                          [[r.runner, cell(r.median_s, "{:.2f}"), cell(r.min_s, "{:.2f}"),
                            str(len(r.times_s))] for r in rows])


OPTIONAL = [("wall / bound", "bound_ratio", "{:.2f}"), ("tail s (95→100%)", "tail_s", "{:.3f}"),
            ("KiB per task in flight", "kib_per_task", "{:,.0f}")]


def workload_table(rows: list[Row]) -> str:
    """The common columns, the memory of whoever was watched, and what this workload adds."""
    columns = [("median s", "median_s", "{:.3f}"), ("min s", "min_s", "{:.3f}"),
               ("tasks/s", "tasks_per_s", "{:,.0f}"), ("speedup", "speedup", "{:.2f}"),
               ("eff.", "efficiency", "{:.0%}")]
    if rows[0].memory_of == "client":
        columns.append(("client RSS growth MiB", "rss_growth_mib", "{:.0f}"))
    else:
        columns.append(("peak worker RSS MiB", "peak_rss_mib", "{:.0f}"))
    columns += [c for c in OPTIONAL if any(getattr(r, c[1]) is not None for r in rows)]
    lines = [[r.runner, f"{r.n:,}" + (f" (×{r.scale:.3g})" if r.scale != 1 else "")]
             + [cell(getattr(r, attr), fmt) for _, attr, fmt in columns] for r in rows]
    return markdown_table(["runner", "items"] + [name for name, _, _ in columns], lines)


def headline_table(headline: list[dict[str, Any]]) -> str:
    lines = [[h["workload"], h["pp_runner"], cell(h["pp_s"], "{:.3f}"),
              h["peer_runner"] or "n/a", cell(h["peer_s"], "{:.3f}"),
              cell(h["ratio"], "{:.2f}"), h["target"]] for h in headline]
    return markdown_table(["workload", "pp_notebook (best row)", "s", "best peer", "s",
                           "pp / peer", "target"], lines)


def write_json(path: Path, document: dict[str, Any], rows: list[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {**document, "load_average_at_end": os.getloadavg(),
                "rows": [asdict(row) for row in rows]}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
