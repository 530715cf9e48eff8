"""The process of a local engine: ipyparallel's own IPEngine, quicker to see its connection
file.

A local engine is launched beside the controller and waits for the connection file the
controller writes once it is up; `IPEngine` looks for it every 0.1 s (50 ms lost on average).
This one looks every FILE_POLL_S, and waits until the file is whole. Run as
`python -m pp_notebook.engine_app <ipengine's arguments>`.
"""

from __future__ import annotations

import json
import time

from ipyparallel.engine.app import IPEngine

FILE_POLL_S = 0.005


class QuickEngine(IPEngine):
    """IPEngine that sees its connection file within FILE_POLL_S of its writing."""

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
    QuickEngine.launch_instance()
