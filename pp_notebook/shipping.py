"""Which of several objects cannot be sent to the engines, and why.

Callers pickle everything together once (the usual, fast path) and ask this only when that
failed, to name each culprit in their error message.
"""

from __future__ import annotations

from typing import Any, Mapping

import cloudpickle


def unpicklable(named: Mapping[str, Any]) -> dict[str, Exception]:
    """{name: the error cloudpickle raised} for each object of `named` that cannot be pickled."""
    found = {}
    for name, obj in named.items():
        try:
            cloudpickle.dumps(obj)
        except Exception as exc:
            found[name] = exc
    return found
