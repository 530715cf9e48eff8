"""Put file names and source lines back into tracebacks of code shipped by cloudpickle.

cloudpickle renames the file of every function it ships by value to "<dynamic-code>", so an
engine's traceback says `File "<dynamic-code>", line 7, in f` with no source. The client
still has the code objects (and, for notebook cells, the source in linecache): match each
such frame by function name and line to the code it came from, and restore both.
"""

from __future__ import annotations

import linecache
import re
import types
from collections.abc import Iterable
from typing import Any, cast

from IPython import get_ipython

_DYNAMIC_FRAME = re.compile(r'^  File "<dynamic-code>", line (\d+), in (.+)$', re.MULTILINE)
_LOCATION = re.compile(r'File "([^"]+)", line (\d+)')


def cell_label(filename: str) -> str | None:
    """`Cell In[12]` for a notebook cell's file (IPython's own name for it), else None."""
    shell = get_ipython()
    named = shell.compile.format_code_name(filename) if shell is not None else None
    return f"{named[0]} {named[1]}" if named else None


def relabel(text: str) -> str:
    """`File "/tmp/ipykernel_7/123.py", line 3` → `Cell In[12], line 3`, as IPython shows a
    cell's lines; other files stay as they are."""
    def location(match: re.Match) -> str:
        label = cell_label(match.group(1))
        return f"{label}, line {match.group(2)}" if label else match.group(0)

    return _LOCATION.sub(location, text)


class SourceMap:
    """Where the code objects reachable from some shipped objects were defined."""

    def __init__(self, roots: Iterable[Any]) -> None:
        self._codes: dict[str, list[types.CodeType]] = {}
        seen: set[int] = set()
        for root in roots:
            self._collect(root, seen, depth=0)

    def _collect(self, obj: Any, seen: set[int], depth: int) -> None:
        if id(obj) in seen or depth > 6:
            return
        seen.add(id(obj))
        if isinstance(obj, types.CodeType):
            self._codes.setdefault(obj.co_name, []).append(obj)
            for const in obj.co_consts:
                if isinstance(const, types.CodeType):
                    self._collect(const, seen, depth + 1)
        elif isinstance(obj, (types.FunctionType, types.MethodType)):
            func = cast(types.FunctionType, getattr(obj, "__func__", obj))  # a method: its function
            self._collect(func.__code__, seen, depth + 1)
            for name in func.__code__.co_names:  # helpers it calls from its module
                if name in func.__globals__:
                    self._collect(func.__globals__[name], seen, depth + 1)
            for cell in func.__closure__ or ():
                try:
                    self._collect(cell.cell_contents, seen, depth + 1)
                except ValueError:  # an empty cell
                    pass
        elif isinstance(obj, type) and obj.__module__ == "__main__":
            for value in vars(obj).values():
                self._collect(value, seen, depth + 1)
        elif isinstance(obj, dict):
            for value in obj.values():
                self._collect(value, seen, depth + 1)

    def locate(self, name: str, lineno: int) -> str | None:
        """The file of the code object named `name` that spans line `lineno`."""
        for code in self._codes.get(name, ()):
            lines = [line for _, _, line in code.co_lines() if line is not None]
            if lines and min(lines + [code.co_firstlineno]) <= lineno <= max(lines):
                return code.co_filename
        return None

    def repair(self, text: str | None) -> str | None:
        """Rewrite the "<dynamic-code>" frames of a formatted traceback, and name notebook
        cells as IPython does (`Cell In[12], line 3, in f`)."""
        if not text:
            return text
        if "<dynamic-code>" not in text:
            return relabel(text)

        def frame(match: re.Match) -> str:
            lineno, name = int(match.group(1)), match.group(2)
            filename = self.locate(name, lineno)
            if filename is None:
                return match.group(0)
            source = linecache.getline(filename, lineno).strip()
            where = cell_label(filename) or f'File "{filename}"'
            head = f'  {where}, line {lineno}, in {name}'
            return f"{head}\n    {source}" if source else head

        return relabel(_DYNAMIC_FRAME.sub(frame, text))
