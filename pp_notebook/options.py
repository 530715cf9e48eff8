"""The options of a run, checked once, for `map` and `%%parallel` alike.

Every check says what was wrong and what is expected, so a bad option fails before anything is
sent to the engines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
MAX_TIMEOUT_S = 1e9
"""About 30 years: the most an engine's interval timer can hold, with room to spare."""
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(value: int | str) -> int:
    """Bytes from `500_000_000`, `"500MB"`, `"2 GiB"` or `"1.5g"`."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    size = int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower().rstrip("b")]) \
        if match else 0
    if size < 1:
        raise ValueError(f"memory_limit must be a size of at least 1 byte, such as 500MB, 2GB "
                         f"or a number of bytes, not {value!r}")
    return size


@dataclass(frozen=True)
class RunOptions:
    """How a run treats its items; see `pp_notebook.map` for each option's meaning."""

    timeout: float | None = None
    retries: int = 0
    batch: int | str = "auto"
    validate: Any = None
    checkpoint: str | Path | None = None
    key: Callable[[Any], Any] | None = None
    speculate: bool = False
    concurrency: int = 1
    memory_limit: int | str | None = None

    def __post_init__(self) -> None:
        timeout, retries, batch = self.timeout, self.retries, self.batch
        if timeout is not None and not (isinstance(timeout, (int, float))
                                        and 0 < timeout <= MAX_TIMEOUT_S):
            raise ValueError(f"timeout must be a positive number of seconds (at most "
                             f"{MAX_TIMEOUT_S:g}) or None, not {timeout!r}")
        if not (isinstance(retries, int) and retries >= 0):
            raise ValueError(f"retries must be an integer >= 0, not {retries!r}")
        if batch != "auto" and not (isinstance(batch, int) and batch >= 1):
            raise ValueError(f"batch must be 'auto' or an integer >= 1, not {batch!r}")
        validate = self.validate
        if validate is not None and not (callable(validate) or isinstance(validate, dict)):
            raise TypeError("validate must be a callable (returning a reason string when a "
                            "result is wrong) or a {column: dtype} dict, not "
                            f"{type(validate).__name__}")
        if not isinstance(self.speculate, bool):
            raise TypeError(f"speculate must be True or False, not {self.speculate!r}")
        if self.key is not None and not callable(self.key):
            raise TypeError(f"key must be a function of an item, not {type(self.key).__name__}")
        if self.key is not None and self.checkpoint is None:
            raise ValueError("key= names items in a checkpoint: give checkpoint=PATH too")
        if not (isinstance(self.concurrency, int) and 1 <= self.concurrency <= 1024):
            raise ValueError(f"concurrency must be an integer from 1 to 1024 (tasks run at once "
                             f"on each engine), not {self.concurrency!r}")
        if self.memory_limit is not None:
            object.__setattr__(self, "memory_limit", parse_size(self.memory_limit))
