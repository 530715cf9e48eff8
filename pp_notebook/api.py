"""The plain Python entry points: `map()` starts a Run on the kernel's cluster, `last_run()`
gives the latest one (from `map` or a `%%parallel` cell)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from . import cluster
from .options import RunOptions, describe
from .records import Labels, item_label
from .run import Run, warn_captured_streams
from .store import STORE

_last_run: Run | None = None


def last_run() -> Run | None:
    """The kernel's most recent Run (from `%%parallel` or `map`): its errors, summary, records."""
    return _last_run


def submit(fn: Callable, items: Iterable, options: RunOptions,
           labels: Labels = item_label) -> Run:
    """Build a Run (its task checked), start it on the kernel's cluster and make it the last
    run; bad input raises before anything is sent."""
    global _last_run
    run = Run(fn, items, options, labels=labels).start()
    _last_run = run
    return run


def map(fn: Callable, items: Iterable, *, timeout: float | None = None, retries: int = 0,
        batch: int | str = "auto", validate: Any = None, checkpoint: str | None = None,
        key: Callable[[Any], Any] | None = None, speculate: bool = False, concurrency: int = 1,
        memory_limit: int | str | None = None, share: tuple = ()) -> Run:
    options = RunOptions(timeout=timeout, retries=retries, batch=batch, validate=validate,
                         checkpoint=checkpoint, key=key, speculate=speculate,
                         concurrency=concurrency, memory_limit=memory_limit, share=share)
    warn_captured_streams(fn)
    return submit(fn, items, options)


def share(value: Any) -> Any:
    """Ship `value` once per host and keep it there between runs, whatever its size (frames
    and arrays over 1 MB are shared anyway); returns `value`, so `df = pp.share(load())`."""
    return STORE.mark(value)


def forget() -> None:
    """Drop every shared value: from this kernel's store, the engines and their hosts."""
    values = STORE.clear()
    handle = cluster.current_or_none()
    if handle is not None:
        handle.drop_shared([value.digest for value in values])


map.__doc__ = f"""Run `fn(item)` for every item on the kernel's cluster; returns the Run at once.

`run.result()` waits and gives the merged DataFrame; `run.errors()`, `run.summary()`,
`run.plot()`, `run.cancel()`. Options (checked once, by RunOptions):

{describe()}
"""
