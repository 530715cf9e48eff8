"""The options of a run, declared and checked in one place, for `map` and `%%parallel` alike.

Each RunOptions field carries its help, its metavar and its kind; the magic builds its
arguments from them, `map`'s docstring lists them, and one checker per kind gives the one
message for a bad value, naming the option as the caller spelled it (`timeout` for `map`,
`--timeout` for the magic). `%pp`'s engine counts and seconds use the same checkers. A bad
option fails before anything is sent to the engines.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
MAX_TIMEOUT_S = 1e9
"""About 30 years: the most an engine's interval timer can hold, with room to spare."""
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


# -- one checker per kind of value: each returns the value to keep, or raises ---------------

def seconds(value: Any, name: str, *, optional: bool = False) -> float | None:
    """A positive number of seconds (at most MAX_TIMEOUT_S); None where `optional`."""
    if value is None and optional:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) \
            and 0 < value <= MAX_TIMEOUT_S:
        return value
    raise ValueError(f"{name} must be a positive number of seconds (at most {MAX_TIMEOUT_S:g})"
                     f"{' or None' if optional else ''}, not {value!r}")


def count(value: Any, name: str, *, minimum: int = 1, maximum: int | None = None,
          what: str = "") -> int:
    """A whole number from `minimum` (to `maximum`)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum \
            and (maximum is None or value <= maximum):
        return value
    bounds = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
    raise ValueError(f"{name} must be an integer {bounds}{what}, not {value!r}")


def count_or_auto(value: Any, name: str, what: str = "") -> int | str:
    """A whole number >= 1, or "auto"."""
    if value == "auto":
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f"{name} must be 'auto' or an integer >= 1{what}, not {value!r}")


def parse_size(value: int | str, name: str = "memory_limit") -> int:
    """Bytes from `500_000_000`, `"500MB"`, `"2 GiB"` or `"1.5g"`."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    size = int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower().rstrip("b")]) \
        if match else 0
    if size < 1:
        raise ValueError(f"{name} must be a size of at least 1 byte, such as 500MB, 2GB "
                         f"or a number of bytes, not {value!r}")
    return size


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


def _validator(value: Any, name: str) -> Any:
    if value is not None and not (callable(value) or isinstance(value, dict)):
        raise TypeError(f"{name} must be a callable (returning a reason string when a result "
                        f"is wrong) or a {{column: dtype}} dict, not {type(value).__name__}")
    return value


def _key(value: Any, name: str) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be a function of an item, not {type(value).__name__}")
    return value


def _values(value: Any, name: str) -> tuple:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise TypeError(f"{name} must be a list of values to share, not {type(value).__name__}")


def _path(value: Any, name: str) -> Any:
    if value is not None and not isinstance(value, (str, Path)):
        raise TypeError(f"{name} must be a path (str or pathlib.Path), not {value!r}")
    return value


# -- the options ------------------------------------------------------------------------

def _option(default: Any, check: Callable[[Any, str], Any], help: str, metavar: str | None,
            *, from_notebook: bool = False, numeric: bool = False, many: bool = False) -> Any:
    """A RunOptions field: its default, its checker, and what the magic and `map` say of it
    (`numeric`: the magic's text is read as a number; `from_notebook`: as a notebook name;
    `many`: as comma-separated notebook names)."""
    return field(default=default, metadata={"check": check, "help": help, "metavar": metavar,
                                            "from_notebook": from_notebook, "numeric": numeric,
                                            "many": many})


@dataclass(frozen=True)
class RunOptions:
    """How a run treats its items; each field's help is in `map`'s docstring and `%%parallel?`."""

    timeout: float | None = _option(
        None, lambda v, n: seconds(v, n, optional=True),
        "seconds one item may run; slower items end with status `timeout`", "S", numeric=True)
    retries: int = _option(
        0, lambda v, n: count(v, n, minimum=0),
        "extra attempts for an item that failed, timed out or lost its engine", "N",
        numeric=True)
    batch: int | str = _option(
        "auto", count_or_auto,
        "items per message to an engine (auto: sized from measured run times)", "N|auto",
        numeric=True)
    validate: Any = _option(
        None, _validator,
        "a function (returning a reason when a result is wrong) or a {column: dtype} dict; "
        "bad results get status `invalid`", "NAME", from_notebook=True)
    checkpoint: str | Path | None = _option(
        None, _path,
        "save each successful item to this file as it ends; a run with the same file skips "
        "the items saved there", "PATH")
    key: Callable[[Any], Any] | None = _option(
        None, _key,
        "with checkpoint: a function naming each item (default: a hash of the item)", "NAME",
        from_notebook=True)
    speculate: bool = _option(
        False, _flag,
        "once the queue is empty, back up tasks running far longer than usual on idle "
        "engines; the first copy to finish wins", None)
    concurrency: int = _option(
        1, lambda v, n: count(v, n, maximum=1024, what=" (tasks run at once on each engine)"),
        "items run at once on each engine, in threads (for tasks that wait on I/O)", "N",
        numeric=True)
    memory_limit: int | str | None = _option(
        None, lambda v, n: None if v is None else parse_size(v, n),
        "how much an engine may grow while it runs one task (500MB, 2GB or bytes); beyond it "
        "the task ends with status `memory`", "SIZE")
    share: tuple = _option(
        (), _values,
        "values to ship once per host and keep there between runs, whatever their size "
        "(frames and arrays over 1 MB are shared anyway)", "NAME[,NAME]", from_notebook=True,
        many=True)

    def __post_init__(self) -> None:
        for name, value in checked(vars(self), str).items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_text(cls, values: Mapping[str, Any], lookup: Callable[[str, str], Any]
                  ) -> RunOptions:
        """Options as the magic's arguments give them: numbers as text, notebook objects by
        name (`lookup(flag, name)`); a bad value's message names the flag (`--timeout`)."""
        typed: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in values:
                typed[f.name] = f.default
                continue
            value = values[f.name]
            if f.metadata["from_notebook"] and f.metadata["many"]:
                value = tuple(lookup(flag(f.name), part.strip()) for part in value.split(",")
                              if part.strip())
            elif f.metadata["from_notebook"]:
                value = lookup(flag(f.name), value)
            typed[f.name] = number(value) if f.metadata["numeric"] and isinstance(value, str) \
                else value
        checked(typed, flag)
        return cls(**typed)


def checked(values: Mapping[str, Any], name: Callable[[str], str]) -> dict[str, Any]:
    """Each option's value as it is kept (sizes in bytes), checked; `name` spells the option
    in messages. Raises ValueError or TypeError with one message per problem."""
    out = {f.name: f.metadata["check"](values[f.name], name(f.name)) for f in fields(RunOptions)}
    if out["key"] is not None and out["checkpoint"] is None:
        raise ValueError(f"{name('key')} names items in a checkpoint: give "
                         f"{name('checkpoint')} too")
    return out


def flag(name: str) -> str:
    """`memory_limit` → `--memory-limit`: an option as the magic spells it."""
    return "--" + name.replace("_", "-")


def number(text: str) -> int | float | str:
    """`"3"` → 3, `"2.5"` → 2.5; other text stays text, for its checker to refuse or take."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def describe() -> str:
    """The options, one paragraph each: the list `map`'s docstring ends with."""
    return "\n".join(f"    `{f.name}`: {f.metadata['help']}." for f in fields(RunOptions))
