"""The controller process of the clusters this toolkit starts: ipyparallel's own IPController,
without the fixed pause in its hub set-up.

`IPController.init_hub` sleeps 0.25 s after creating its (here absent) results database.
Nothing runs beside it then: the event loop has not started, and the schedulers and the heart
monitor start later. The pause waits for nothing, and was a sixth of a local cluster's
start-up. It also logs warnings only: at INFO the hub logged two lines a request, and built
debug records its handler then dropped (0.6 -> 0.5 ms of its CPU a request).
Run as `python -m pp_notebook.controller_app <ipcontroller's arguments>`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ipyparallel.controller.app import IPController
from traitlets import default


class QuickController(IPController):
    """IPController whose hub set-up does not sleep, logging warnings only."""

    @default("log_level")
    def _log_level_default(self) -> int:
        return logging.WARN

    def init_hub(self) -> Any:
        self.log.setLevel(self.log_level)  # traitlets leaves the logger at DEBUG
        sleep = time.sleep
        time.sleep = lambda seconds: None  # the only thread of this process at this point
        try:
            return super().init_hub()
        finally:
            time.sleep = sleep


if __name__ == "__main__":
    QuickController.launch_instance()
