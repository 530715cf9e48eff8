"""The widget's front-end files (widgets/dashboard.js and .css), wherever pp_notebook runs from.

The wheel carries the repository's top-level `widgets/` inside the package
(`pp_notebook/widgets/`, hatchling force-include). An editable install has no such copy: the
package is the source tree, so the files are found beside it, in the repository's `widgets/`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

REPO_WIDGETS = Path(__file__).resolve().parents[2] / "widgets"


def asset(name: str) -> str:
    """The text of widgets/`name`, from the installed package, else from the repository."""
    packaged = resources.files("pp_notebook").joinpath("widgets", name)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    source = REPO_WIDGETS / name
    if source.is_file():
        return source.read_text(encoding="utf-8")
    raise FileNotFoundError(
        f"pp_notebook's widget file {name} is missing: it is neither in the installed package "
        f"(pp_notebook/widgets/) nor in the repository ({REPO_WIDGETS}); reinstall pp_notebook")
