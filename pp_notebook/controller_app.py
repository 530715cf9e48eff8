"""The controller process of the clusters this toolkit starts: ipyparallel's own IPController,
without the fixed pause in its hub set-up.

`IPController.init_hub` sleeps 0.25 s after creating its (here absent) results database.
Nothing runs beside it then: the event loop has not started, and the schedulers and the heart
monitor start later. The pause waits for nothing, and was a sixth of a local cluster's
start-up. It also logs warnings only (quiet_app.py).
Run as `python -m pp_notebook.controller_app <ipcontroller's arguments>`.
"""

from __future__ import annotations

import time
from typing import Any

from ipyparallel.controller.app import IPController

from pp_notebook.quiet_app import WarningsOnly


class QuickController(WarningsOnly, IPController):
    """IPController whose hub set-up does not sleep, logging warnings only."""

    def init_hub(self) -> Any:
        sleep = time.sleep
        time.sleep = lambda seconds: None  # the only thread of this process at this point
        try:
            return super().init_hub()
        finally:
            time.sleep = sleep


if __name__ == "__main__":
    QuickController.launch_instance()
