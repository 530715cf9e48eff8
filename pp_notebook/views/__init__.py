"""How a run is shown. This chooser sits above the renderers, as tqdm's `auto.py` does: the
dashboard widget in a Jupyter kernel with widgets, a text line elsewhere (terminals,
`--no-widget`). Views read only immutable snapshots and the summary.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from IPython import get_ipython

from .dashboard import Dashboard
from .live import ProgressView, Source
from .report import FailureReport
from .text import TextProgress, background_notice

__all__ = ["Dashboard", "FailureReport", "ProgressView", "TextProgress", "background_notice",
           "progress", "widgets_available"]


def widgets_available() -> bool:
    """True in a Jupyter kernel with ipywidgets installed; False in terminal IPython or scripts."""
    shell: Any = get_ipython()
    return getattr(shell, "kernel", None) is not None \
        and importlib.util.find_spec("ipywidgets") is not None


def progress(source: Source, widget: bool = True) -> ProgressView:
    """Start the live view of a run: the dashboard where widgets can be drawn, else a text line."""
    if widget and widgets_available():
        return Dashboard(source).start()
    return TextProgress(source).start()
