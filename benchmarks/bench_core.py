"""pp_notebook beside its peers on one machine, 2 workers each: one table, one JSON file.

What it measures, and why:
1. Start-up, from nothing to the first result of a trivial task back in the caller:
   `pp_notebook.start(2)` + a one-item map; ipyparallel's default
   `ipp.Cluster(n=2).start_and_connect_sync()` + `wait_for_engines` + one apply; and
   `multiprocessing.Pool(2)` + one apply. This is the wait a notebook user pays first.
2. Throughput on warm pools (workers started and warmed up before timing):
   - no-op: many `identity` tasks, so the time is pure per-task overhead (scheduling,
     serialisation, messaging, building the result);
   - cpu: tasks that each spin ~10 ms on one core, so the time shows how close a runner gets
     to the ideal speedup of 2 on 2 workers.
   Runners: pp_notebook.map (batch="auto", through `run.result()`, the user's path);
   ipyparallel's LoadBalancedView.map_sync on the very cluster pp_notebook started
   (chunksize=1, and 100 for the no-op); multiprocessing.Pool.map (default chunksize);
   joblib.Parallel (loky); concurrent.futures.ProcessPoolExecutor.map (chunksize 1 and two
   larger ones); and a serial loop in this process, the baseline for speedup.
   Repeats are interleaved (every runner once, then again) so drift hits all alike; each
   row gives the median and the minimum.

Every runner imports the task functions by name from `benchmarks/tasks.py` (this folder is
put on PYTHONPATH before any worker starts), so none pays for pickling code by value.
multiprocessing uses the platform's default start method; its pools are forked before any
ipyparallel client thread exists.

Run from the repository root: `python benchmarks/bench_core.py [--quick] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Workers of every kind must import `tasks` by name: set this before any of them starts.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import ipyparallel as ipp
import joblib
import psutil
import tasks

import pp_notebook

WORKERS = 2
PP = "pp_notebook.map"
SERIAL = "serial (in-process)"
DEFAULT_JSON = HERE / "results" / "core.json"

Runner = Callable[[Callable, list], list]


@dataclass(frozen=True)
class Config:
    quick: bool
    repeats: int
    startup_repeats: int
    n_noop: int
    n_cpu: int
    json_path: Path


@dataclass
class Row:
    """One runner on one workload: its timings and what follows from them."""

    runner: str
    workload: str
    n: int
    times_s: list[float]
    median_s: float = 0.0
    min_s: float = 0.0
    tasks_per_s: float | None = None
    speedup: float | None = None
    efficiency: float | None = None
    ratio_to_pp: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.median_s = statistics.median(self.times_s)
        self.min_s = min(self.times_s)


# -- start-up ----------------------------------------------------------------------------

def startup_pp_notebook() -> float:
    """pp_notebook.start(2) until a one-item map's result is back."""
    start = time.perf_counter()
    try:
        pp_notebook.start(WORKERS)
        run = pp_notebook.map(tasks.identity, [0])
        run.wait()
        values = run.result()["result"].tolist()
        elapsed = time.perf_counter() - start
    finally:
        stop_and_reap(pp_notebook.stop)
    check("start-up", PP, values, [0])
    return elapsed


def startup_ipp_default() -> float:
    """ipyparallel's default local cluster until one apply's result is back."""
    start = time.perf_counter()
    cluster = ipp.Cluster(n=WORKERS)
    client = None
    try:
        client = cluster.start_and_connect_sync()
        client.wait_for_engines(WORKERS, timeout=120)
        value = client.load_balanced_view().apply_sync(tasks.identity, 0)
        elapsed = time.perf_counter() - start
    finally:
        if client is not None:
            client.close()
        stop_and_reap(cluster.stop_cluster_sync)
    check("start-up", "ipyparallel default", [value], [0])
    return elapsed


def startup_mp_pool() -> float:
    """multiprocessing.Pool(2) until one apply's result is back."""
    start = time.perf_counter()
    pool = multiprocessing.Pool(WORKERS)
    try:
        value = pool.apply(tasks.identity, (0,))
        elapsed = time.perf_counter() - start
    finally:
        pool.close()
        pool.join()
    check("start-up", "multiprocessing.Pool", [value], [0])
    return elapsed


def measure_startup(repeats: int) -> list[Row]:
    """Each start-up, `repeats` times; the pool first, before any ipyparallel thread runs."""
    starters = {
        "multiprocessing.Pool(2)": startup_mp_pool,
        "ipyparallel default Cluster(n=2)": startup_ipp_default,
        "pp_notebook.start(2)": startup_pp_notebook,
    }
    times: dict[str, list[float]] = {name: [] for name in starters}
    for _ in range(repeats):
        for name, starter in starters.items():
            times[name].append(starter())
            print(f"  start-up {name}: {times[name][-1]:.2f} s", flush=True)
    return [Row(name, "start-up", 1, ts) for name, ts in times.items()]


# -- warm pools and their runners ------------------------------------------------------------

@dataclass
class Pools:
    """Warm workers of every kind, 2 each; closed by the ExitStack that opened them."""

    mp_pool: Any
    executor: ProcessPoolExecutor
    parallel: joblib.Parallel
    lbview: Any = None


def open_local_pools(stack: ExitStack) -> Pools:
    """Start and warm the non-ipyparallel pools (forked before any client thread exists)."""
    mp_pool = multiprocessing.Pool(WORKERS)
    stack.callback(close_mp_pool, mp_pool)
    executor = ProcessPoolExecutor(WORKERS)
    stack.callback(executor.shutdown, wait=True, cancel_futures=True)
    stack.callback(shut_down_loky)
    parallel = stack.enter_context(joblib.Parallel(n_jobs=WORKERS))
    warm = list(range(4 * WORKERS))
    mp_pool.map(tasks.identity, warm)
    list(executor.map(tasks.identity, warm))
    parallel(joblib.delayed(tasks.identity)(x) for x in warm)
    return Pools(mp_pool, executor, parallel)


def open_pp_cluster(stack: ExitStack, pools: Pools) -> None:
    """Start pp_notebook's cluster; its client's LoadBalancedView serves the ipyparallel rows."""
    stack.callback(stop_and_reap, pp_notebook.stop)
    pp_notebook.start(WORKERS)
    pools.lbview = pp_notebook.cluster.current().client.load_balanced_view()


def stop_and_reap(stop: Callable[[], Any], timeout: float = 30.0) -> None:
    """Call `stop`, then wait until every ipyparallel process this one started has ended.

    An engine's nanny outlives the cluster's stop by a few seconds (about 4 s here), and
    then no longer counts as our child: wait for it, so that nothing is left running.
    """
    procs = [p for p in psutil.Process().children(recursive=True) if is_ipyparallel(p)]
    try:
        stop()
    finally:
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        for proc in alive:
            print(f"WARNING: ipyparallel process {proc.pid} outlived its cluster; ending it")
            proc.terminate()
        psutil.wait_procs(alive, timeout=5)


def is_ipyparallel(proc: psutil.Process) -> bool:
    try:
        return "ipyparallel" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def close_mp_pool(pool: Any) -> None:
    pool.close()
    pool.join()


def shut_down_loky() -> None:
    """End joblib's reusable loky workers (they otherwise idle on for 300 s)."""
    from joblib.externals.loky import reusable_executor

    executor = reusable_executor._executor  # private, but the only handle on the live one
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)


def run_pp_notebook(fn: Callable, items: list) -> list:
    run = pp_notebook.map(fn, items)
    run.wait()
    return run.result()["result"].tolist()


def run_serial(fn: Callable, items: list) -> list:
    return [fn(x) for x in items]


def pool_default_chunksize(n: int) -> int:
    """What multiprocessing.Pool.map picks: about 4 chunks per worker."""
    chunks, extra = divmod(n, WORKERS * 4)
    return chunks + bool(extra)


def runners_for(pools: Pools, workload: str, n: int) -> dict[str, Runner]:
    """Every runner for one workload, pp_notebook first, the serial baseline last."""
    runners: dict[str, Runner] = {
        PP: run_pp_notebook,
        "ipyparallel lbview chunksize=1":
            lambda fn, items: pools.lbview.map_sync(fn, items, chunksize=1),
    }
    if workload == "no-op":
        runners["ipyparallel lbview chunksize=100"] = \
            lambda fn, items: pools.lbview.map_sync(fn, items, chunksize=100)
    runners["multiprocessing.Pool.map"] = lambda fn, items: pools.mp_pool.map(fn, items)
    runners["joblib.Parallel (loky)"] = \
        lambda fn, items: pools.parallel(joblib.delayed(fn)(x) for x in items)
    big = pool_default_chunksize(n)
    for size in sorted({1, max(1, big // 8), big}):
        runners[f"ProcessPoolExecutor chunksize={size}"] = \
            lambda fn, items, size=size: list(pools.executor.map(fn, items, chunksize=size))
    runners[SERIAL] = run_serial
    return runners


# -- measuring ------------------------------------------------------------------------------

def check(workload: str, runner: str, values: list, expected: list) -> None:
    if list(values) != list(expected):
        raise AssertionError(f"{runner} on {workload}: wrong results "
                             f"(first values {list(values)[:5]!r})")


def measure_workload(runners: dict[str, Runner], workload: str, fn: Callable, items: list,
                     repeats: int) -> list[Row]:
    """Warm every runner once, then time `repeats` interleaved rounds of all of them."""
    for name, runner in runners.items():
        warm = items[: 4 * WORKERS]
        check(workload, name, runner(fn, warm), warm)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for round_ in range(repeats):
        for name, runner in runners.items():
            start = time.perf_counter()
            values = runner(fn, items)
            times[name].append(time.perf_counter() - start)
            check(workload, name, values, items)
        print(f"  {workload}: round {round_ + 1}/{repeats} done", flush=True)
    return [Row(name, workload, len(items), ts) for name, ts in times.items()]


def derive(rows: list[Row]) -> None:
    """Fill tasks/s, speedup and efficiency (cpu only) and the ratio to pp_notebook."""
    by_workload: dict[str, dict[str, Row]] = {}
    for row in rows:
        by_workload.setdefault(row.workload, {})[row.runner] = row
    for workload, group in by_workload.items():
        pp = next((r for name, r in group.items() if name.startswith("pp_notebook")), None)
        serial = group.get(SERIAL)
        for row in group.values():
            if workload != "start-up":
                row.tasks_per_s = row.n / row.median_s
            if workload == "cpu" and serial is not None:
                row.speedup = serial.median_s / row.median_s
                row.efficiency = row.speedup / WORKERS
            if pp is not None:
                row.ratio_to_pp = row.median_s / pp.median_s


# -- output ---------------------------------------------------------------------------------

COLUMNS = [("runner", 34, "{}"), ("workload", 9, "{}"), ("n", 5, "{}"),
           ("median s", 9, "{:.3f}"), ("min s", 9, "{:.3f}"), ("tasks/s", 9, "{:,.0f}"),
           ("speedup", 8, "{:.2f}"), ("eff.", 6, "{:.0%}"), ("vs pp", 6, "{:.2f}")]


def table(rows: list[Row]) -> str:
    """A fixed-width table; `vs pp` is this row's median time over pp_notebook's."""
    def cells(row: Row) -> list[Any]:
        return [row.runner, row.workload, row.n, row.median_s, row.min_s, row.tasks_per_s,
                row.speedup, row.efficiency, row.ratio_to_pp]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) if i < 2 else v.rjust(w)
                         for i, (v, (_, w, _)) in enumerate(zip(values, COLUMNS)))

    out = [line([name for name, _, _ in COLUMNS]),
           "  ".join("-" * w for _, w, _ in COLUMNS)]
    previous = None
    for row in rows:
        if previous is not None and row.workload != previous:
            out.append("")
        previous = row.workload
        out.append(line(["n/a" if v is None else fmt.format(v)
                         for v, (_, _, fmt) in zip(cells(row), COLUMNS)]))
    return "\n".join(out)


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "workers": WORKERS,
        "mp_start_method": multiprocessing.get_start_method(),
        "versions": {"pp_notebook": pp_notebook.__version__, "ipyparallel": ipp.__version__,
                     "joblib": joblib.__version__},
        "cpu_task_s": tasks.CPU_TASK_S,
        "load_average": os.getloadavg(),  # other work on the machine skews every row
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(path: Path, config: Config, env: dict[str, Any], rows: list[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    document = {"environment": env, "load_average_at_end": os.getloadavg(), "config": settings,
                "rows": [asdict(row) for row in rows]}
    path.write_text(json.dumps(document, indent=2) + "\n")


def leftover_children() -> list[str]:
    """Processes this benchmark started that are still alive (there should be none).

    The resource trackers of multiprocessing and loky are left out: they end with this process.
    """
    left = []
    for child in psutil.Process().children(recursive=True):
        try:
            command = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "resource_tracker" not in command:
            left.append(f"{child.pid} {command[:120]}")
    return left


# -- main -----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 repeat and fewer items: a smoke test in well under a minute")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write the results (default {DEFAULT_JSON})")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds per workload (default 5, or 1 with --quick)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)
    return Config(quick=args.quick, repeats=repeats, startup_repeats=1 if args.quick else 2,
                  n_noop=500 if args.quick else 5000, n_cpu=40 if args.quick else 200,
                  json_path=args.json)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    env = environment()
    print(f"Python {env['python']}, {env['cpu_count']} cores, {WORKERS} workers, "
          f"multiprocessing start method {env['mp_start_method']!r}, "
          f"versions {env['versions']}, load average {env['load_average'][0]:.2f}", flush=True)
    rows = measure_startup(config.startup_repeats)
    workloads = {"no-op": (tasks.identity, list(range(config.n_noop))),
                 "cpu": (tasks.busy, list(range(config.n_cpu)))}
    with ExitStack() as stack:
        pools = open_local_pools(stack)
        open_pp_cluster(stack, pools)
        for workload, (fn, items) in workloads.items():
            runners = runners_for(pools, workload, len(items))
            rows += measure_workload(runners, workload, fn, items, config.repeats)
    derive(rows)
    print()
    print(table(rows))
    write_json(config.json_path, config, env, rows)
    print(f"\nwrote {config.json_path}")
    left = leftover_children()
    if left:
        print("WARNING: child processes still running:\n  " + "\n  ".join(left))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
