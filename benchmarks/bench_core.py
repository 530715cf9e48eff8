"""pp_notebook beside its peers on one machine, 2 workers each: Markdown tables, one JSON file.

What it measures, and why (benchmarks/README.md has the targets and how to read the tables):
- Start-up, from nothing to the first result of a trivial task back in the caller, for every
  kind of pool: the wait a notebook user pays first.
- Six workloads on warm pools (started and warmed up before timing), each chosen to expose
  one cost: per-task overhead (no-op), parallel efficiency (cpu), load balancing against a
  known bound (skewed durations), recovery from slow first attempts (stragglers), overlap of
  waiting tasks (I/O-bound), and the client's memory on a very long run (100,000 tasks).
Runners (runners.py): pp_notebook.map through `run.result()`, the `%%parallel` magic in a real
IPython shell, ipyparallel's LoadBalancedView.map_sync on the very cluster pp_notebook started
(chunksize 1 and the best of a few), multiprocessing.Pool.map, joblib.Parallel (loky),
dask.distributed (client.map + gather), ProcessPoolExecutor.map (chunksize 1 and the best of a
few), and for I/O a ThreadPoolExecutor in this process as a reference.
Repeats are interleaved (every runner once, then again) so drift hits all alike; each row has
the median and the minimum, tasks/s, speedup over the summed task durations, efficiency, and
the peak RSS of the runner's worker processes, sampled in a thread during each run.

Every runner imports the task functions by name from `benchmarks/tasks.py` (this folder is
put on PYTHONPATH before any worker starts), so none pays for pickling code by value.

Run from the repository root: `python benchmarks/bench_core.py [--quick] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

HERE = Path(__file__).resolve().parent
# Workers of every kind must import `tasks` by name: set this before any of them starts.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import psutil  # noqa: E402  (after the path set-up above)
import report  # noqa: E402
import tasks  # noqa: E402
from report import Row  # noqa: E402
from sampling import sampling  # noqa: E402

if TYPE_CHECKING:
    from runners import Pools, Runner

DEFAULT_JSON = HERE / "results" / "core.json"
SKEW_SHORT_S, SKEW_LONG_S = 0.005, 0.300
STRAGGLER_TASK_S, STRAGGLER_SLOW_S, STRAGGLER_SEED = 0.002, 1.5, 0
IO_TASK_S, IO_CONCURRENCY = 0.100, 64
SKEW_TARGET, IO_TARGET_S = 1.05, 2.0
NOOP_VS_JOBLIB, NOOP_VS_IPP, CPU_VS_POOL = 1.0, 50.0, 1.05
STARTUP_TARGET_S, STARTUP_VS_DASK = 1.0, 2.5
JOBLIB, IPP_CHUNK_1, POOL = ("joblib.Parallel (loky)", "ipyparallel lbview chunksize=1",
                             "multiprocessing.Pool.map")
DASK_START = "dask LocalCluster(n_workers=2)"
SHRINK_OVER = 4
WARM_ITEMS = 8
FAST_S, FAST_ROUNDS = 0.2, 9
RSS_INTERVAL_S = 0.02
MIB = 2 ** 20


@dataclass(frozen=True)
class Config:
    quick: bool
    repeats: int
    startup_repeats: int
    n_noop: int
    n_cpu: int
    n_skew: int  # short tasks; SKEW_LONG_S ones go before and after them
    n_skew_long: int  # at each end
    n_stragglers: int
    n_slow: int
    n_io: int
    io_budget_s: float  # runners that would take far longer run I/O items for about this long
    n_many: int
    json_path: Path


@dataclass(frozen=True)
class Workload:
    """Tasks to map, and what to report of each runner's runs of them."""

    name: str
    title: str
    fn: Callable
    n: int
    make_items: Callable[[int], list]  # the first k items, made afresh for each run
    serial_s: float | None = None  # the summed task durations: the baseline of speedup
    bound_s: float | None = None  # the greedy list-scheduling makespan on the workers
    stamped: bool = False  # tasks return (index, finished_at): each run's tail is measured
    pp_options: tuple[dict, ...] = ({},)  # one pp_notebook.map row per option set
    peers: bool = True  # False: pp_notebook.map alone
    threads: bool = False  # add the in-process ThreadPoolExecutor reference
    run_budget_s: float | None = None  # a slow runner's runs are cut to about this long
    memory_of: str = "workers"  # "client": sample this process's RSS instead
    per_task_memory: bool = False  # report RSS growth per task in flight
    target: str = ""
    meets: Callable[[Row, dict[str, Row]], bool] | None = None
    """Whether the target is met, given pp_notebook's best row and all rows by runner."""

    def items_for(self, runner: Runner) -> int:
        """All items; or, where all of them would take over SHRINK_OVER x `run_budget_s` at the
        runner's tasks in flight (judged from the task durations), 1/k of them, with k the
        smallest whole number that brings the run within `run_budget_s`."""
        if self.run_budget_s is None or not self.serial_s:
            return self.n
        nominal = self.serial_s / runner.in_flight
        if nominal <= SHRINK_OVER * self.run_budget_s:
            return self.n
        return math.ceil(self.n / math.ceil(nominal / self.run_budget_s))


# -- the workloads ----------------------------------------------------------------------------

def build_workloads(config: Config, workers: int, markers: Path) -> list[Workload]:
    return [no_op(config.n_noop), cpu(config.n_cpu),
            skewed(config.n_skew, config.n_skew_long, workers),
            stragglers(config.n_stragglers, config.n_slow, markers),
            io_bound(config.n_io, config.io_budget_s), many(config.n_many)]


def spun(durations: list[float]) -> Callable[[int], list]:
    """Items for tasks.spin: (index, seconds)."""
    return lambda k: list(enumerate(durations[:k]))


def no_op(n: int) -> Workload:
    return Workload("no-op", f"{n:,} no-op tasks (identity)", tasks.identity, n,
                    lambda k: list(range(k)),
                    target=f"≤ {NOOP_VS_JOBLIB:g}× joblib, ≥ {NOOP_VS_IPP:g}× faster than "
                           "ipyparallel chunksize=1",
                    meets=lambda best, rows: best.median_s <= NOOP_VS_JOBLIB * rows[JOBLIB].median_s
                    and rows[IPP_CHUNK_1].median_s >= NOOP_VS_IPP * best.median_s)


def cpu(n: int) -> Workload:
    durations = [tasks.CPU_TASK_S] * n
    return Workload("cpu", f"{n:,} CPU-bound tasks of {tasks.CPU_TASK_S * 1e3:g} ms", tasks.spin,
                    n, spun(durations), serial_s=sum(durations),
                    target=f"≤ {CPU_VS_POOL:.2f}× multiprocessing.Pool",
                    meets=lambda best, rows: best.median_s <= CPU_VS_POOL * rows[POOL].median_s)


def skewed(n_short: int, n_long: int, workers: int) -> Workload:
    """Short tasks with a few 60x longer ones at the start and at the end of the input."""
    durations = [SKEW_LONG_S] * n_long + [SKEW_SHORT_S] * n_short + [SKEW_LONG_S] * n_long
    return Workload(
        "skewed", f"{n_short:,} CPU tasks of {SKEW_SHORT_S * 1e3:g} ms, {n_long} of "
        f"{SKEW_LONG_S * 1e3:g} ms before and {n_long} after them",
        tasks.spin, len(durations), spun(durations), serial_s=sum(durations),
        bound_s=greedy_makespan(durations, workers),
        target=f"wall / bound ≤ {SKEW_TARGET:.2f}",
        meets=lambda best, rows: best.bound_ratio <= SKEW_TARGET)


def greedy_makespan(durations: list[float], workers: int) -> float:
    """List scheduling in input order: each task goes to the worker that frees first."""
    free = [0.0] * workers
    for duration in durations:
        free[free.index(min(free))] += duration
    return max(free)


def stragglers(n: int, n_slow: int, markers: Path) -> Workload:
    """Short tasks, a few of which (fixed seed) sleep 750x longer on their first attempt only.

    Each run gets a fresh marker folder, so that every run's first attempts are slow.
    """
    slow = set(random.Random(STRAGGLER_SEED).sample(range(n), n_slow))

    def make_items(k: int) -> list:
        folder = tempfile.mkdtemp(dir=markers)
        return [(i, STRAGGLER_TASK_S, STRAGGLER_SLOW_S,
                 os.path.join(folder, str(i)) if i in slow else None) for i in range(k)]

    return Workload(
        "stragglers", f"{n:,} CPU tasks of {STRAGGLER_TASK_S * 1e3:g} ms; first attempts of "
        f"{n_slow} (at {', '.join(map(str, sorted(slow)))}) also sleep {STRAGGLER_SLOW_S:g} s",
        tasks.straggle, n, make_items, serial_s=n * STRAGGLER_TASK_S + n_slow * STRAGGLER_SLOW_S,
        stamped=True, pp_options=({"speculate": False}, {"speculate": True}),
        target="speculate=True: a shorter tail and total than speculate=False",
        meets=speculation_helps)


def speculation_helps(best: Row, rows: dict[str, Row]) -> bool:
    """speculate=True beats speculate=False on both the tail and the total (False where
    either row is missing: map did not take the keyword)."""
    with_it, without = (rows.get(f"pp_notebook.map speculate={on}") for on in (True, False))
    return bool(with_it and without and with_it.tail_s < without.tail_s
                and with_it.median_s < without.median_s)


def io_bound(n: int, budget_s: float) -> Workload:
    return Workload(
        "I/O", f"{n:,} tasks that sleep {IO_TASK_S * 1e3:g} ms", tasks.nap, n,
        lambda k: [(i, IO_TASK_S) for i in range(k)], serial_s=n * IO_TASK_S,
        pp_options=({}, {"concurrency": IO_CONCURRENCY}), threads=True, run_budget_s=budget_s,
        per_task_memory=True, target=f"under {IO_TARGET_S:g} s",
        meets=lambda best, rows: best.median_s < IO_TARGET_S)


def many(n: int) -> Workload:
    return Workload("many", f"{n:,} no-op tasks through pp_notebook.map alone", tasks.identity,
                    n, lambda k: list(range(k)), peers=False, memory_of="client",
                    target="completes")


# -- runners per workload -------------------------------------------------------------------

def runners_for(pools: Pools, workload: Workload) -> list[Runner]:
    """pp_notebook's rows first (its option sets, or plain map where none is available), then
    the magic and the peers; ipyparallel and ProcessPoolExecutor at chunksize 1 and their best."""
    chosen = [r for r in map(pools.pp_map, workload.pp_options) if r is not None]
    chosen = chosen or [pools.pp_map({})]
    if not workload.peers:
        return chosen
    chosen.append(pools.magic())
    for family in (pools.ipp, pools.executor_map):
        chosen += [family(1), best_chunksize(family, workload)]
    chosen += [pools.pool_map(), pools.loky(), pools.dask_map()]
    if workload.threads:
        chosen.append(pools.thread_map())
    return chosen


def best_chunksize(family: Callable[[int], Runner], workload: Workload) -> Runner:
    """Time one run at each candidate chunksize above 1; the fastest, named with the others."""
    n = workload.items_for(family(1))
    big = math.ceil(n / (4 * family(1).workers))  # what multiprocessing.Pool.map would pick
    candidates = sorted({max(2, big // 8), max(2, big)})
    times = {size: timed_run(workload, family(size), n).seconds for size in candidates}
    best = min(times, key=times.get)
    tried = ", ".join(f"{size}: {seconds:.3f} s" for size, seconds in times.items())
    print(f"  {workload.name}: {family(best).name} is the fastest of ({tried})", flush=True)
    runner = family(best)
    return replace(runner, name=f"{runner.name} (best of {', '.join(map(str, candidates))})")


# -- measuring ------------------------------------------------------------------------------

class Sample(NamedTuple):
    """One timed run."""

    seconds: float
    peak_rss: int
    rss_growth: int
    tail_s: float | None


class RssWatch:
    """The summed RSS of some processes: at the start, and the highest seen since."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(pid) for pid in pids]
        self.peak = 0
        self.before = self.sample()

    def sample(self) -> int:
        total = 0
        for proc in self.procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # a worker that ended: it holds no memory
                pass
        self.peak = max(self.peak, total)
        return total


@contextmanager
def watching(pids: list[int]) -> Iterator[RssWatch]:
    """Sample the processes' RSS every RSS_INTERVAL_S in a thread while the block runs."""
    watch = RssWatch(pids)
    with sampling(watch.sample, RSS_INTERVAL_S, "bench-rss"):
        yield watch


def timed_run(workload: Workload, runner: Runner, k: int) -> Sample:
    """Run the first k items once; check the results; the time, memory and tail."""
    items = workload.make_items(k)
    pids = [os.getpid()] if workload.memory_of == "client" else runner.pids()
    with watching(pids) as rss:
        start = time.perf_counter()
        values = runner.map(workload.fn, items)
        seconds = time.perf_counter() - start
    runner.settle()
    check(workload, runner, values, k)
    return Sample(seconds, rss.peak, rss.peak - rss.before,
                  tail_s([v[1] for v in values]) if workload.stamped else None)


def check(workload: Workload, runner: Runner, values: list, k: int) -> None:
    ids = [v[0] for v in values] if workload.stamped else list(values)
    if ids != list(range(k)):
        raise AssertionError(f"{runner.name} on {workload.name}: wrong results "
                             f"(first values {list(values)[:5]!r})")


def tail_s(finished: list[float]) -> float:
    """From the moment 95% of the tasks had finished to the moment all had."""
    ordered = sorted(finished)
    return ordered[-1] - ordered[math.ceil(0.95 * len(ordered)) - 1]


def measure_workload(workload: Workload, runners: list[Runner], repeats: int) -> list[Row]:
    """Warm every runner on a few items, then time `repeats` interleaved rounds of all, and
    up to FAST_ROUNDS rounds of the runners that take under FAST_S: a one-off pause (a full
    garbage collection of this big process takes 85 ms) moves a 3-sample median of a 30 ms
    run, and the slow runners (seconds a round) would make more rounds of all too long."""
    for runner in runners:
        timed_run(workload, runner, min(WARM_ITEMS, workload.n))
    samples: dict[str, list[Sample]] = {runner.name: [] for runner in runners}
    for round_ in range(max(repeats, FAST_ROUNDS)):
        ran = [runner for runner in runners if round_ < repeats
               or statistics.median(s.seconds for s in samples[runner.name]) < FAST_S]
        if not ran:
            break
        for runner in ran:
            samples[runner.name].append(timed_run(workload, runner, workload.items_for(runner)))
        print(f"  {workload.name}: round {round_ + 1} done ({len(ran)} runners)", flush=True)
    return [make_row(workload, runner, samples[runner.name]) for runner in runners]


def make_row(workload: Workload, runner: Runner, samples: list[Sample]) -> Row:
    """A row for the whole workload: times scaled up where the runner ran fewer items."""
    n = workload.items_for(runner)
    scale = workload.n / n
    times = [s.seconds for s in samples]
    median = statistics.median(times) * scale
    growth = max(s.rss_growth for s in samples) / MIB
    tails = [s.tail_s for s in samples if s.tail_s is not None]
    speedup = workload.serial_s / median if workload.serial_s else None
    return Row(
        runner.name, runner.kind, workload.name, n, times, scale=scale, median_s=median,
        min_s=min(times) * scale, tasks_per_s=workload.n / median, speedup=speedup,
        efficiency=speedup / runner.workers if speedup is not None else None,
        memory_of=workload.memory_of, peak_rss_mib=max(s.peak_rss for s in samples) / MIB,
        rss_growth_mib=growth,
        kib_per_task=growth * 1024 / runner.in_flight if workload.per_task_memory else None,
        bound_ratio=median / workload.bound_s if workload.bound_s else None,
        tail_s=statistics.median(tails) if tails else None)


def measure_startup(starters: dict[str, Callable[[], float]], repeats: int) -> list[Row]:
    """Each start-up `repeats` times, interleaved; each starts and stops its own workers."""
    times: dict[str, list[float]] = {name: [] for name in starters}
    for _ in range(repeats):
        for name, starter in starters.items():
            times[name].append(starter())
            print(f"  start-up {name}: {times[name][-1]:.2f} s", flush=True)
    return [Row(name, "pp" if name.startswith("pp_notebook") else "peer", "start-up", 1, ts,
                median_s=statistics.median(ts), min_s=min(ts)) for name, ts in times.items()]


# -- the headline ---------------------------------------------------------------------------

def headline(rows: list[Row], workloads: list[Workload]) -> list[dict[str, Any]]:
    """Per workload, start-up first: pp_notebook's best row against the best peer, and the
    workload's target, met or missed."""
    by_name = {w.name: w for w in workloads}
    result = []
    for name in ["start-up", *by_name]:
        group = [r for r in rows if r.workload == name]
        pp = min((r for r in group if r.kind == "pp"), key=lambda r: r.median_s)
        peer = min((r for r in group if r.kind == "peer"), key=lambda r: r.median_s, default=None)
        workload = by_name.get(name)
        target = workload.target if workload else ""
        if name == "start-up":
            dask = next(r.median_s for r in group if r.runner == DASK_START)
            met = pp.median_s <= min(STARTUP_TARGET_S, STARTUP_VS_DASK * dask)
            target = (f"≤ {STARTUP_TARGET_S:g} s and ≤ {STARTUP_VS_DASK:g}× dask LocalCluster "
                      f"({pp.median_s / dask:.1f}×): " + ("met" if met else "MISSED"))
        if workload and workload.meets:
            met = workload.meets(pp, {r.runner: r for r in group})
            target += ": met" if met else ": MISSED"
        result.append({"workload": name, "pp_runner": pp.runner, "pp_s": pp.median_s,
                       "peer_runner": peer.runner if peer else None,
                       "peer_s": peer.median_s if peer else None,
                       "ratio": pp.median_s / peer.median_s if peer else None,
                       "target": target})
    return result


def print_tables(rows: list[Row], workloads: list[Workload], top: list[dict[str, Any]]) -> None:
    print("\n### Start-up: from nothing to the first result\n")
    print(report.startup_table([r for r in rows if r.workload == "start-up"]))
    for number, workload in enumerate(workloads, 1):
        group = [r for r in rows if r.workload == workload.name]
        print(f"\n### {number}. {workload.name}: {workload.title}\n")
        if workload.bound_s:
            print(f"Greedy list-scheduling bound on the workers: {workload.bound_s:.3f} s\n")
        if any(r.scale != 1 for r in group):
            print(f"Rows marked (×k) ran 1/k of the items, about {workload.run_budget_s:g} s a "
                  f"run (all {workload.n:,} would take them more than "
                  f"{SHRINK_OVER * workload.run_budget_s:g} s); their times are scaled up k "
                  "times.\n")
        print(report.workload_table(group))
    print("\n### Headline: pp_notebook's best row against the best peer\n")
    print(report.headline_table(top))


# -- main -----------------------------------------------------------------------------------

def environment(workers: int) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "workers": workers,
        "versions": {name: version(name) for name in
                     ("pp_notebook", "ipyparallel", "joblib", "dask", "distributed", "ipython")},
        "load_average": os.getloadavg(),  # other work on the machine skews every row
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 repeat and fewer items: a smoke test of every row")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write the results (default {DEFAULT_JSON})")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds per workload (default 3, or 1 with --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        sizes = {"n_noop": 500, "n_cpu": 40, "n_skew": 100, "n_skew_long": 2,
                 "n_stragglers": 400, "n_slow": 2, "n_io": 200, "io_budget_s": 0.5,
                 "n_many": 10_000}
    else:
        sizes = {"n_noop": 5_000, "n_cpu": 200, "n_skew": 400, "n_skew_long": 3,
                 "n_stragglers": 1_000, "n_slow": 5, "n_io": 1_000, "io_budget_s": 1.0,
                 "n_many": 100_000}
    return Config(quick=args.quick, repeats=args.repeats or (1 if args.quick else 3),
                  startup_repeats=1 if args.quick else 3, json_path=args.json, **sizes)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    # Imported here, not at the top: dask's and loky's workers start by re-running this file
    # (multiprocessing's spawn), and should not pay for importing pandas, ipyparallel and dask.
    import runners

    env = environment(runners.WORKERS)
    print(f"Python {env['python']}, {env['cpu_count']} cores, {runners.WORKERS} workers, "
          f"versions {env['versions']}, load average {env['load_average'][0]:.2f}", flush=True)
    rows = measure_startup(runners.STARTERS, config.startup_repeats)
    with ExitStack() as stack:
        markers = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pp-bench-")))
        workloads = build_workloads(config, runners.WORKERS, markers)
        pools = runners.open_pools(stack, IO_CONCURRENCY)
        # The client's memory first: memory that earlier workloads freed stays in this
        # process's RSS, and a run that reuses it would show no growth.
        for workload in sorted(workloads, key=lambda w: w.memory_of != "client"):
            print(f"{workload.name}: {workload.title}", flush=True)
            rows += measure_workload(workload, runners_for(pools, workload), config.repeats)
    top = headline(rows, workloads)
    print_tables(rows, workloads, top)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    described = [{"name": w.name, "title": w.title, "n": w.n, "serial_s": w.serial_s,
                  "bound_s": w.bound_s, "target": w.target} for w in workloads]
    report.write_json(config.json_path, {"environment": env, "config": settings,
                                         "workloads": described, "headline": top}, rows)
    print(f"\nwrote {config.json_path}")
    left = runners.leftover_children()
    if left:
        print("WARNING: child processes still running:\n  " + "\n  ".join(left))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
