"""The controller and local engine processes of the clusters this toolkit starts:
ipyparallel's own IPController and IPEngine, less two fixed waits in their start-up.

- `IPController.init_hub` sleeps 0.25 s after creating its (here absent) results database.
  Nothing runs beside it then: the event loop has not started, and the schedulers and the
  heart monitor start later. The pause waits for nothing, and was a sixth of a local
  cluster's start-up.
- A local engine is launched beside the controller and waits for its connection file, which
  `IPEngine` looks for every 0.1 s: 50 ms lost on average. Here it looks every 5 ms.

Run as `python -m pp_notebook.apps controller|engine <ipyparallel's arguments>`.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from ipyparallel.controller.app import IPController
from ipyparallel.engine.app import IPEngine

FILE_POLL_S = 0.005


class QuickController(IPController):
    """IPController whose hub set-up does not sleep."""

    def init_hub(self) -> Any:
        sleep = time.sleep
        time.sleep = lambda seconds: None  # this process has one thread here
        try:
            return super().init_hub()
        finally:
            time.sleep = sleep


class QuickEngine(IPEngine):
    """IPEngine that sees its connection file within FILE_POLL_S of its writing."""

    def init_engine(self) -> None:
        if not self.connection_info_env:
            self.find_connection_file()
            deadline = time.monotonic() + self.wait_for_url_file
            while not os.path.exists(self.url_file) and time.monotonic() < deadline:
                time.sleep(FILE_POLL_S)
        super().init_engine()  # finds the file there (or gives up, as IPEngine does)


APPS: dict[str, type[IPController] | type[IPEngine]] = {"controller": QuickController,
                                                       "engine": QuickEngine}

if __name__ == "__main__":
    APPS[sys.argv[1]].launch_instance(sys.argv[2:])
