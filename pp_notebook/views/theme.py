"""The colours every view shares: one per status, and the running bar (widgets/dashboard.css
repeats them, with the engine states' colours; a unit test keeps the two in step)."""

from __future__ import annotations

STATUS_COLOURS = {"ok": "#4c9a2a", "error": "#d62728", "timeout": "#ff7f0e",
                  "memory": "#8c564b", "invalid": "#9467bd", "lost": "#555555",
                  "cancelled": "#aaaaaa"}
RUNNING_COLOUR = "#6baed6"
