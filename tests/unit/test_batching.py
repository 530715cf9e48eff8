"""The scheduling policy against synthetic timings: sizes, budgets, depth, speculation, and
list scheduling on a simulated pair of engines."""

import heapq

import pytest

from pp_notebook.batching import (
    BATCH_BUDGET_S,
    BUDGET_FACTOR,
    CLIENT_LOAD,
    CLIENT_S_PER_BATCH,
    EVEN_CV,
    EVEN_EVIDENCE,
    FIRST_BATCH,
    IN_FLIGHT_PER_ENGINE,
    MAX_BATCH,
    MIN_BATCH_S,
    MIN_BUDGET_S,
    SPECULATE_MIN_S,
    TARGET_BATCH_S,
    BatchPolicy,
)


def timed(mean_s: float, count: int, concurrency: int = 1) -> BatchPolicy:
    policy = BatchPolicy(concurrency=concurrency)
    for _ in range(count):
        policy.observe(mean_s)
    return policy


def test_before_any_timing_a_batch_takes_its_share_of_the_queue_with_a_short_budget():
    assert BatchPolicy().batch_size(100_000, 2) == FIRST_BATCH
    assert BatchPolicy().batch_size(100, 2) == 25  # one of two batches on each of 2 engines
    assert BatchPolicy().batch_size(1, 2) == 1
    assert BatchPolicy(concurrency=8).batch_size(4, 2) == 8  # one item per thread at least
    assert BatchPolicy().budget(FIRST_BATCH) == MIN_BUDGET_S < BATCH_BUDGET_S
    assert not BatchPolicy().overdue(1, 1e6)


def test_a_fixed_batch_option_is_kept():
    assert timed(0.001, 100).batch_size(1000, 2) == 199  # auto, for contrast
    fixed = BatchPolicy(batch=7)
    fixed.observe(0.001)
    assert fixed.batch_size(1000, 2) == 7


def test_batches_grow_with_evidence_up_to_the_target_work():
    assert timed(0.01, 1).batch_size(100_000, 2) == 4  # four times the evidence
    early, later = timed(0.01, 2).batch_size(100_000, 2), timed(0.01, 1000).batch_size(100_000, 2)
    assert early == 8 and later == int(TARGET_BATCH_S / 0.010005)
    assert timed(1e-7, 10**6).batch_size(10**9, 2) == MAX_BATCH


def test_batches_are_long_enough_that_round_trips_leave_the_client_mostly_idle():
    floor_s = CLIENT_S_PER_BATCH / CLIENT_LOAD  # of work per engine
    assert timed(0.001, 1).batch_size(100_000, 2) == int(2 * floor_s / 0.001005)
    # 64 engines on 0.25 s sleeps: two a batch, not one, while the queue is long ...
    assert timed(0.25, 64).batch_size(384, 64) == 2
    assert timed(0.25, 64).batch_size(64, 64) == 1  # ... and one each at the tail


def test_the_tail_is_spread_over_every_engine():
    policy = timed(0.001, 1000)
    assert policy.batch_size(100_000, 2) == 199
    assert policy.batch_size(40, 2) == 10  # 40 items over 2 engines x 2 in flight
    assert policy.batch_size(40, 4) == 5  # never below MIN_BATCH_S of work


def test_near_instant_tasks_still_spread_counting_the_per_item_overhead():
    assert timed(0.0, 1000).batch_size(10_000, 2) == 2500  # 5 µs of overhead per item


def test_a_budget_is_twice_the_expected_time_within_bounds():
    policy = timed(0.01, 100)
    assert policy.budget(10) == pytest.approx(2 * 10 * 0.010005)
    assert policy.budget(1000) == BATCH_BUDGET_S
    assert timed(1e-6, 100).budget(1) == MIN_BUDGET_S


def test_engines_hold_two_batches_while_the_queue_is_long_and_one_at_its_tail():
    policy = timed(0.01, 100)
    assert policy.depth(10_000, 2) == IN_FLIGHT_PER_ENGINE
    assert policy.depth(2, 2) == 1


def test_a_batch_is_overdue_at_three_times_its_expected_time_and_never_before_half_a_second():
    policy = timed(1.0, 10)
    assert not policy.overdue(1, 2.9) and policy.overdue(1, 3.01)
    quick = timed(0.001, 10)
    assert not quick.overdue(1, SPECULATE_MIN_S - 0.01) and quick.overdue(1, SPECULATE_MIN_S)


def test_concurrency_shares_an_engine_between_its_threads():
    assert timed(0.04, 100, concurrency=4).mean_item_s() == pytest.approx(0.040005 / 4)


def test_times_are_even_when_they_vary_little_and_enough_have_been_seen():
    assert timed(0.01, 100).even()
    assert not timed(0.01, EVEN_EVIDENCE - 1).even()
    mixed = timed(0.001, 50)
    for _ in range(50):
        mixed.observe(0.1)
    assert not mixed.even()
    batches = BatchPolicy()  # a batch's total and its squares: ten items of 10 and 12 ms
    batches.observe(0.11, 10, squares=5 * 0.01 ** 2 + 5 * 0.012 ** 2)
    assert batches.even() and (0.001 / 0.011) < EVEN_CV


def test_the_tail_is_where_batches_shrink_to_spread_the_queue():
    policy = timed(0.001, 1000)
    assert not policy.at_tail(100_000, 2) and policy.at_tail(40, 2)
    assert not BatchPolicy().at_tail(40, 2)  # nothing timed yet
    assert not BatchPolicy(batch=7).at_tail(3, 2)


def test_an_engines_share_of_an_even_tail_makes_it_end_with_the_others():
    policy = timed(0.01, 100)
    # 20 items of 10 ms; the other engine is busy for 100 ms: 15 here, 5 left for it
    assert policy.share(20, 0.0, 0.1, 1) == 15
    assert policy.share(5, 0.0, 0.0, 1) == 3
    assert policy.share(3, 0.5, 0.0, 1) == 0  # busy past the end: the other takes the rest
    assert policy.share(3, 0.0, 5.0, 3) == 3  # idle: it takes what is left
    assert timed(0.01, 100, concurrency=4).share(2, 0.0, 0.0, 1) == 2  # never beyond the queue


def test_a_share_keeps_its_budgets_margin_and_a_batchs_least_work():
    # 1,000 items of 10 ms for one engine: no more than half its 1 s budget allows
    assert timed(0.01, 100).share(1000, 0.0, 0.0, 0) == int(
        BATCH_BUDGET_S / (BUDGET_FACTOR * 0.010005))
    # 1,000 items of 10 µs over 64 engines: 16 each would not pay for their trips
    tiny = timed(1e-5, 100)
    assert tiny.share(1000, 0.0, 0.0, 63) == int(MIN_BATCH_S / tiny.mean_item_s())


def simulate(durations: list[float], engines: int, batches: list | None = None) -> float:
    """The makespan of a run scheduled by the policy on `engines` simulated engines: each
    takes a batch when it is free, runs items in order, and hands back what is left once its
    budget is spent (as the engine code does); at the tail of even work an engine takes its
    share (as Run._dispatch does). Durations are known to the engines only. Each batch's
    (engine, size, whether at the tail) is appended to `batches`."""
    policy = BatchPolicy()
    queue = list(range(len(durations)))
    free_at = [0.0] * engines
    events = [(0.0, engine) for engine in range(engines)]  # (time, engine ready for a batch)
    heapq.heapify(events)
    end = 0.0
    while queue:
        now, engine = heapq.heappop(events)
        size = policy.batch_size(len(queue), engines)
        tail = policy.at_tail(len(queue), engines)
        if tail and policy.even():
            others = [max(0.0, free_at[other] - now) for other in range(engines) if other != engine]
            size = policy.share(len(queue), 0.0, sum(others), len(others))
        if batches is not None:
            batches.append((engine, size, tail))
        batch, queue = queue[:size], queue[size:]
        budget, spent, clock = policy.budget(len(batch)), 0.0, max(now, free_at[engine])
        for position, index in enumerate(batch):
            if position and spent > budget:
                queue = batch[position:] + queue  # handed back for idle engines
                break
            clock += durations[index]
            spent += durations[index]
            policy.observe(durations[index])
        free_at[engine] = clock
        end = max(end, clock)
        heapq.heappush(events, (clock, engine))
    return end


@pytest.mark.parametrize("durations", [
    [0.01] * 400,                                   # even
    [0.01] * 200 + [1.0] + [0.01] * 199,            # one long task in the middle
    [0.01] * 399 + [1.0],                           # the long task last
    [0.001 * (i % 50) for i in range(1000)],        # skewed
])
def test_the_makespan_stays_within_the_list_scheduling_bound(durations):
    """Graham's bound for list scheduling in input order: sum/m + (1 - 1/m) * longest. Batches
    must not make it worse (beyond a little rounding); even work splits evenly."""
    engines = 2
    graham = sum(durations) / engines + (1 - 1 / engines) * max(durations)
    assert simulate(durations, engines) <= 1.05 * graham


def test_even_work_splits_evenly_between_the_engines():
    assert simulate([0.01] * 400, 2) <= 1.05 * 2.0


def test_the_tail_of_even_work_is_shared_out_at_once():
    """Each engine takes one batch at the tail (halving it would cost each a batch boundary
    per round), and they still end together."""
    batches: list = []
    assert simulate([0.01] * 400, 2, batches) <= 1.01 * 2.0
    at_tail = [engine for engine, _, tail in batches if tail]
    assert sorted(at_tail) == [0, 1]
