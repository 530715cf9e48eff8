"""Immutable pictures of a run, the only thing views read: counts, engines (and those not
granted), timeline marks, recent failures, a preview of results and the shipping progress.

A leaf module (no imports from the package), so that the run, the summary and every view can
share these types without importing one another. Each field is bounded: a snapshot costs the
same for 10 or 10 million tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["pending", "ok", "error", "timeout", "memory", "invalid", "lost", "cancelled"]
"""What became of an item: still `pending`, `ok`, one of FAILED, or `cancelled`."""
FAILED: tuple[Status, ...] = ("error", "timeout", "memory", "invalid", "lost")
"""Statuses of items that ran and did not succeed. `cancelled` is apart: not a failure."""
EngineState = Literal["starting", "idle", "busy", "retiring", "left", "dead"]


@dataclass(frozen=True)
class EngineSnapshot:
    """One engine as a view shows it."""

    id: int
    host: str | None
    pid: int | None
    state: EngineState
    done: int
    failed: int
    busy_s: float
    running_task: int | None
    running_for_s: float | None
    running_item: str | None = None  # the running task's item, as a short plain repr
    job: str | None = None  # the scheduler's job id, where a scheduler started it


@dataclass(frozen=True)
class NotGranted:
    """An engine given up on: it did not register within the cluster's deadline (with a
    scheduler: its job stayed pending, and was cancelled), or it could not be started."""

    job: str | None
    reason: str
    waited_s: float


@dataclass(frozen=True)
class Mark:
    """One finished attempt on the timeline: which task and item, where, when (seconds since
    the run started, client clock), for how long, and how it ended."""

    task: int
    item: str
    engine: int
    start_s: float
    duration_s: float
    status: Status


@dataclass(frozen=True)
class Failure:
    """A failed item as the live views list it, with its traceback."""

    task: int
    item: str
    status: Status
    error: str
    traceback: str | None


@dataclass(frozen=True)
class PreviewRow:
    """One finished item of the results so far: its item and a short repr of its value."""

    task: int
    item: str
    status: Status
    value: str


@dataclass(frozen=True)
class Shipment:
    """What a run did with one shared value: shipped to `hosts` hosts in `seconds`, or reused
    from an earlier run (already on every host it needed)."""

    name: str
    nbytes: int
    hosts: int
    seconds: float
    reused: bool


@dataclass(frozen=True)
class Shipping:
    """What went to the engines for this run: the task's bytes, how many engines have it, the
    shared values (each once per host), and the one being shipped now, if any."""

    payload_bytes: int = 0
    engines_sent: int = 0
    engines_total: int = 0
    shared: tuple[Shipment, ...] = ()
    now: str | None = None


@dataclass(frozen=True)
class RunSnapshot:
    """The state of a Run at one moment: counts by status, elapsed time, engines, and bounded
    lists of the latest timeline marks (`marks_total` counts all of them), recent failures,
    and a preview of the results (the first rows in input order and the latest ones)."""

    total: int
    counts: dict[str, int]
    retried: int
    elapsed_s: float
    done: bool
    engines: tuple[EngineSnapshot, ...] = ()
    marks: tuple[Mark, ...] = ()
    marks_total: int = 0
    failures: tuple[Failure, ...] = ()
    first_rows: tuple[PreviewRow, ...] = ()
    latest_rows: tuple[PreviewRow, ...] = ()
    shipping: Shipping = field(default_factory=Shipping)
    not_granted: tuple[NotGranted, ...] = ()

    @property
    def finished(self) -> int:
        """Items that have an end: ok, failed or cancelled."""
        return self.total - self.counts.get("pending", 0)

    @property
    def failed(self) -> int:
        """Items that ran and did not succeed (cancelled ones are not failures)."""
        return sum(self.counts.get(s, 0) for s in FAILED)

    @property
    def cancelled(self) -> int:
        return self.counts.get("cancelled", 0)

    @property
    def completed(self) -> int:
        """Items that ran to an end, ok or failed: what progress shows as done."""
        return self.finished - self.cancelled
