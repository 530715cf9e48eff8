"""The process of a local engine: ipyparallel's own IPEngine, quicker to see its connection
file and lighter on each request.

A local engine is launched beside the controller and waits for the connection file the
controller writes once it is up; `IPEngine` looks for it every 0.1 s (50 ms lost on average).
This one looks every FILE_POLL_S, and waits until the file is whole.

Every request also cost an IPEngine work that nothing uses, a fifth of its CPU for a batch
(1.3 -> 1.05 ms, benchmarks/bench_scale.py): it logged a line at INFO and built four debug
records that its handler then dropped (quiet_app.py), and it published a "busy" status that
the controller parses and the client ignores (it waits for "idle", which marks a request's
output done). At 64 engines on 2 cores, those requests are what delays the last engine's first
task.
Run as `python -m pp_notebook.engine_app <ipengine's arguments>`.
"""

from __future__ import annotations

import json
import time
from typing import Any

import ipyparallel.engine.app
from ipyparallel.engine.app import IPEngine
from ipyparallel.engine.kernel import IPythonParallelKernel

from pp_notebook.quiet_app import WarningsOnly

FILE_POLL_S = 0.005


class QuietKernel(IPythonParallelKernel):
    """ipyparallel's engine kernel, less the "busy" status it publishes for every request."""

    def _publish_status(self, status: str, channel: str, parent: Any = None) -> None:
        if status != "busy":
            super()._publish_status(status, channel, parent)


class QuickEngine(WarningsOnly, IPEngine):
    """IPEngine that sees its connection file within FILE_POLL_S of its writing, logs
    warnings only, and runs a QuietKernel."""

    def init_engine(self) -> None:
        if not self.connection_info_env:
            self.find_connection_file()
            deadline = time.monotonic() + self.wait_for_url_file
            while not _written(self.url_file) and time.monotonic() < deadline:
                time.sleep(FILE_POLL_S)
        super().init_engine()  # finds the file there (or gives up, as IPEngine does)


def _written(path: str) -> bool:
    """Whether the connection file is there whole: the controller creates it, then writes
    it, and an engine looking this often could read it in between."""
    try:
        with open(path) as file:
            json.load(file)
    except (OSError, ValueError):
        return False
    return True


if __name__ == "__main__":
    ipyparallel.engine.app.Kernel = QuietKernel  # IPEngine has no setting for its kernel class
    QuickEngine.launch_instance()
