"""Execute a notebook headless with this environment's kernel and print its summary lines.

Used by `make demo`: the quickstart runs top to bottom in a fresh kernel, and the text the
cells printed (the run summaries, the checks) is shown here, so a terminal is enough.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path, timeout: int = 600) -> nbformat.NotebookNode:
    """Run every cell of the notebook at `path` in its own folder; raise on a failing cell."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return notebook


def printed_text(notebook: nbformat.NotebookNode) -> list[str]:
    """What the code cells printed, and any run summary line they displayed, in order."""
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                texts.append(output["text"])
            else:
                text = output.get("data", {}).get("text/plain", "")
                if " tasks · " in text:
                    texts.append(text)
    return texts


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "notebooks/quickstart.ipynb")
    notebook = execute(path)
    for text in printed_text(notebook):
        print(text.rstrip())
    print(f"{path}: every cell ran")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
