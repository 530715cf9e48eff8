"""The colours every view shares: one per status, per engine state, and the running bar."""

from __future__ import annotations

STATUS_COLOURS = {"ok": "#4c9a2a", "error": "#d62728", "timeout": "#ff7f0e",
                  "memory": "#8c564b", "invalid": "#9467bd", "lost": "#555555",
                  "cancelled": "#aaaaaa"}
RUNNING_COLOUR = "#6baed6"
FAILED_COLOUR = STATUS_COLOURS["error"]
CANCELLED_COLOUR = STATUS_COLOURS["cancelled"]
STATE_COLOURS = {"idle": "#888888", "busy": RUNNING_COLOUR, "dead": FAILED_COLOUR,
                 "starting": STATUS_COLOURS["timeout"], "retiring": "#bcbd22",
                 "left": "#bbbbbb"}
