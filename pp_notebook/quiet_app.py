"""Warnings only, for the controller and local engine processes of a cluster started here
(controller_app.py, engine_app.py).

At INFO, ipyparallel's controller logs two lines for every request and an engine one. And
traitlets leaves an application's logger at DEBUG, filtering in its handler, so every debug
line is built and then dropped. Both cost CPU on every batch (engine 1.31 -> 1.05 ms with
the "busy" status gone too, controller 0.67 -> 0.50 ms: benchmarks/bench_scale.py).
"""

from __future__ import annotations

import logging
from typing import Any

from traitlets import default


class WarningsOnly:
    """Mixin for an ipyparallel application: it logs warnings and worse, and its logger
    builds nothing below that."""

    log: logging.Logger
    log_level: int

    @default("log_level")
    def _log_level_default(self) -> int:
        return logging.WARN

    def initialize(self, argv: Any = None) -> None:
        super().initialize(argv)  # type: ignore[misc]  # the application's own
        self.log.setLevel(self.log_level)
