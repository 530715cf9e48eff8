"""The scheduling policy of a run, as pure arithmetic on measured task times: how many items a
batch holds, how long an engine may work on one, how many batches an engine holds at once,
and when a running batch is overdue enough to back up. No I/O: the Run asks, this answers.

It follows list scheduling: batches aim at TARGET_BATCH_S of work (long enough to hide a
round trip, short enough to spread the tail), a batch that meets unusually long items hands
the rest back early (its budget), and near the end of the queue an engine gets a batch only
when it has none, so nothing waits behind a long task while another engine is idle.
"""

from __future__ import annotations

from dataclasses import dataclass

TARGET_BATCH_S = 0.2
"""Aim for batches that keep an engine busy this long: long enough to hide the ~2 ms cost of
a round trip, short enough that the queue's tail spreads over all engines."""
MIN_BATCH_S = 0.005
CLIENT_S_PER_BATCH = 0.002
CLIENT_LOAD = 0.25
"""A batch's round trip costs the client about CLIENT_S_PER_BATCH of CPU (sending it, its reply
and ipyparallel's messages about it; 1.8 ms measured at 64 engines). Until the queue's tail,
batches last long enough that the engines' round trips keep the client at most CLIENT_LOAD
busy: with 64 engines on 0.25 s tasks, two items a batch instead of one (bench_scale)."""
MAX_BATCH = 10_000
BATCH_BUDGET_S = 1.0
"""An engine starts no new item of a batch after this long; the client requeues the rest."""
BUDGET_FACTOR = 2.0
MIN_BUDGET_S = 0.02
"""Once durations are known, a batch's budget is BUDGET_FACTOR times its expected run time
(at least MIN_BUDGET_S, at most BATCH_BUDGET_S)."""
FIRST_BATCH = 4096
"""Before any duration is known, a batch holds up to FIRST_BATCH items (its share of the
queue), but its engine starts no new one after MIN_BUDGET_S and hands the rest back: a run
of near-instant tasks needs no ramp of round trips, and long tasks still go one by one."""
BATCH_BYTES = 1 << 20
"""A batch carries at most this much of pickled items (and at least one item): big items
are not shipped by the thousand before their run time is known."""
IN_FLIGHT_PER_ENGINE = 2
SPECULATE_FACTOR = 3.0
SPECULATE_MIN_S = 0.5
"""With `speculate=True`, a running batch gets a backup copy on an idle engine once the queue is
empty and it has run SPECULATE_FACTOR times its expected time (and at least SPECULATE_MIN_S)."""
EVEN_CV = 0.25
EVEN_EVIDENCE = 8
"""Task times whose coefficient of variation is at most EVEN_CV (over EVEN_EVIDENCE items at
least) are even: the queue's tail is then shared out at once, in parts that end together
(`share`), instead of being halved round after round. Each round costs every engine a batch
boundary, 3-5 ms of CPU on a busy 2-core machine (bench_core's CPU row)."""
ITEM_OVERHEAD_S = 5e-6
"""What one item costs beyond its own run time (engine ~3 µs, client ~2 µs, measured): batch
sizes count it, so that batches of near-instant tasks still spread over the engines."""


@dataclass
class BatchPolicy:
    """Batch sizes, budgets, queue depth and speculation, from the task times seen so far.

    `batch` is the run's option ("auto" or a fixed size); `concurrency` the items an engine
    runs at once. Feed it the finished attempts' engine times with `observe`.
    """

    batch: int | str = "auto"
    concurrency: int = 1
    timed_items: int = 0
    timed_total: float = 0.0
    timed_squares: float = 0.0

    def observe(self, duration_s: float, items: int = 1, squares: float | None = None) -> None:
        """Count finished attempts: `items` of them (one by default) that ran `duration_s`
        in all, measured on their engines, and `squares`, the sum of their times' squares
        (by default as if each took the same time)."""
        self.timed_items += items
        self.timed_total += duration_s
        self.timed_squares += duration_s * duration_s / items if squares is None else squares

    def even(self) -> bool:
        """Whether the task times seen so far are even (EVEN_CV): then the tail is shared
        out at once (`share`)."""
        if self.timed_items < EVEN_EVIDENCE:
            return False
        mean = self.timed_total / self.timed_items
        variance = max(0.0, self.timed_squares / self.timed_items - mean * mean)
        return variance <= (EVEN_CV * mean) ** 2

    def mean_item_s(self) -> float | None:
        """Engine time per item (its share of a thread when items run at once); None before
        any attempt has finished."""
        if not self.timed_items:
            return None
        return (self.timed_total / self.timed_items + ITEM_OVERHEAD_S) / self.concurrency

    def batch_size(self, queued: int, engines: int) -> int:
        """Items in the next batch, with `queued` items waiting for `engines` live engines."""
        if self.batch != "auto":
            return int(self.batch)
        mean = self.mean_item_s()
        tail = -(-queued // (IN_FLIGHT_PER_ENGINE * max(1, engines)))
        if mean is None:  # its short budget makes an engine hand back what it cannot do soon
            return max(self.concurrency, min(FIRST_BATCH, tail))
        # Shorter batches would not pay for their trip, nor fill an engine's threads.
        smallest = max(int(MIN_BATCH_S / mean), self.concurrency)
        # Grow as evidence comes in; a batch of MIN_BATCH_S is always safe (its budget caps it).
        size = min(int(TARGET_BATCH_S / mean), MAX_BATCH, max(4 * self.timed_items, smallest))
        # Many engines: long enough that their round trips do not swamp the client.
        size = max(size, int(engines * CLIENT_S_PER_BATCH / CLIENT_LOAD / mean))
        return max(1, min(size, max(tail, smallest)))  # spread the tail over all engines

    def at_tail(self, queued: int, engines: int) -> bool:
        """Whether the queue is short enough that batches shrink to spread it (`batch_size`),
        and an even run shares it out instead (`share`)."""
        if self.batch != "auto" or self.mean_item_s() is None:
            return False
        return self.batch_size(queued, engines) < self.batch_size(queued + MAX_BATCH * engines,
                                                                  engines)

    def share(self, queued: int, busy_s: float, others_busy_s: float, others: int) -> int:
        """At the tail of an even run: the items for an engine busy for `busy_s` more seconds
        (0: idle) such that it ends with the `others` engines (busy for `others_busy_s` in
        all) once the `queued` items are handed out. 0 when it is busy past that end: the
        others take the rest. At least MIN_BATCH_S of work (and one item per thread), at most
        what its budget allows with its margin (BUDGET_FACTOR of BATCH_BUDGET_S)."""
        mean = self.mean_item_s() or ITEM_OVERHEAD_S
        end = (queued * mean + busy_s + others_busy_s) / (1 + others)
        items = int((end - busy_s) / mean + 0.5)
        if items <= 0 and busy_s > 0:
            return 0
        smallest = max(int(MIN_BATCH_S / mean), self.concurrency)
        largest = max(smallest, int(BATCH_BUDGET_S / (BUDGET_FACTOR * mean)))
        return min(queued, max(smallest, min(items, largest)))

    def budget(self, size: int) -> float:
        """Seconds an engine may spend on a batch of `size` items before handing the rest back."""
        mean = self.mean_item_s()
        if mean is None:
            return MIN_BUDGET_S
        return min(BATCH_BUDGET_S, max(BUDGET_FACTOR * size * mean, MIN_BUDGET_S))

    def depth(self, queued: int, engines: int) -> int:
        """Batches an engine may hold at once: two while the queue is long, one at its tail
        (a batch queued behind a long one would wait while another engine sits idle)."""
        return IN_FLIGHT_PER_ENGINE if queued > engines * self.batch_size(queued, engines) else 1

    def overdue(self, size: int, running_for_s: float) -> bool:
        """Whether a batch of `size` items running this long deserves a backup copy."""
        mean = self.mean_item_s()
        if mean is None:
            return False
        return running_for_s >= max(SPECULATE_FACTOR * size * mean, SPECULATE_MIN_S)
