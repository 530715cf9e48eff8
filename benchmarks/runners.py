"""The runners bench_core.py compares: how each starts, maps a function, and names its workers.

A Runner is one way to map a function over a list, the same for every workload: its call
(results in input order), the processes that do the work (their memory is sampled), how many
tasks it has in flight at once, and its kind: pp_notebook itself, a peer, or an in-process
reference. `Pools` holds warm workers of every kind, 2 each, and makes the runners; it is
opened onto an ExitStack, which stops every pool and cluster even when a measurement fails.
The start-up functions each start and stop their own.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import ipyparallel as ipp
import joblib
import psutil
import tasks
from dask.distributed import Client, LocalCluster
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config as ShellConfig

import pp_notebook
import pp_notebook.cluster.handle  # noqa: F401  loaded before any timing, as each peer's modules
from pp_notebook.cluster.files import cluster_files, remove_files

WORKERS = 2
SETTLE_TIMEOUT_S = 30.0


def no_settling() -> None:
    """Runners whose map returns only once every worker is idle need no settling."""


@dataclass(frozen=True)
class Runner:
    """One way to map `fn` over `items`; `map` returns the results in input order."""

    name: str
    map: Callable[[Callable, list], list]
    pids: Callable[[], list[int]]
    kind: str = "peer"  # "pp" (pp_notebook itself) | "peer" | "reference" (not a peer)
    workers: int = WORKERS
    in_flight: int = WORKERS
    settle: Callable[[], None] = field(default=no_settling)
    """Called after each timed run, untimed: waits until the workers are idle again (a run
    may return while a losing speculative copy still sleeps on an engine)."""


# -- start-up: from nothing to the first result, each starting and stopping its own -------------

def startup_pp_notebook() -> float:
    """pp_notebook.start(2) until a one-item map's result is back."""
    start = time.perf_counter()
    try:
        pp_notebook.start(WORKERS)
        values = run_pp_notebook(tasks.identity, [0])
        elapsed = time.perf_counter() - start
    finally:
        stop_and_reap(pp_notebook.stop)
    check_first("pp_notebook", values)
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
        stop_ipp(cluster)
    check_first("ipyparallel", [value])
    return elapsed


def startup_mp_pool() -> float:
    """multiprocessing.Pool(2) until one apply's result is back."""
    start = time.perf_counter()
    pool = multiprocessing.Pool(WORKERS)
    try:
        value = pool.apply(tasks.identity, (0,))
        elapsed = time.perf_counter() - start
    finally:
        close_mp_pool(pool)
    check_first("multiprocessing.Pool", [value])
    return elapsed


def startup_executor() -> float:
    """ProcessPoolExecutor(2) until one submit's result is back."""
    start = time.perf_counter()
    with ProcessPoolExecutor(WORKERS) as executor:
        value = executor.submit(tasks.identity, 0).result()
        elapsed = time.perf_counter() - start
    check_first("ProcessPoolExecutor", [value])
    return elapsed


def startup_loky() -> float:
    """joblib.Parallel(n_jobs=2) on fresh loky workers until one task's result is back."""
    shut_down_loky()
    start = time.perf_counter()
    try:
        values = joblib.Parallel(n_jobs=WORKERS)(joblib.delayed(tasks.identity)(0) for _ in [0])
        elapsed = time.perf_counter() - start
    finally:
        shut_down_loky()
    check_first("joblib", values)
    return elapsed


def startup_dask() -> float:
    """A dask LocalCluster of 2 single-threaded worker processes until one result is back."""
    start = time.perf_counter()
    with ExitStack() as stack:
        client = open_dask(stack)
        value = client.submit(tasks.identity, 0, pure=False).result()
        elapsed = time.perf_counter() - start
    check_first("dask", [value])
    return elapsed


STARTERS = {  # the forking pools first in each round, before this round's client threads
    "multiprocessing.Pool(2)": startup_mp_pool,
    "ProcessPoolExecutor(2)": startup_executor,
    "joblib.Parallel (loky), 2 jobs": startup_loky,
    "dask LocalCluster(n_workers=2)": startup_dask,
    "ipyparallel default Cluster(n=2)": startup_ipp_default,
    "pp_notebook.start(2)": startup_pp_notebook,
}


def check_first(runner: str, values: list) -> None:
    if list(values) != [0]:
        raise AssertionError(f"{runner} start-up: wrong result {values!r}")


# -- warm pools --------------------------------------------------------------------------

@dataclass
class Pools:
    """Warm workers of every kind, 2 each (plus an in-process thread pool); makes the runners.

    The ipyparallel rows use the very cluster pp_notebook started, through its client.
    """

    mp_pool: Any
    executor: ProcessPoolExecutor
    parallel: joblib.Parallel
    threads: ThreadPoolExecutor
    dask: Client
    shell: InteractiveShell
    keywords: dict[str, bool] = field(default_factory=dict)

    def pp_map(self, options: dict[str, Any]) -> Runner | None:
        """pp_notebook.map with `options`; None (and a note) where map does not take them."""
        if not all(self.accepts(key, value) for key, value in options.items()):
            return None
        label = " ".join(f"{key}={value}" for key, value in options.items())
        return Runner(f"pp_notebook.map {label}".rstrip(),
                      lambda fn, items: run_pp_notebook(fn, items, **options), engine_pids,
                      kind="pp", in_flight=WORKERS * options.get("concurrency", 1),
                      settle=settle_engines)

    def accepts(self, key: str, value: Any) -> bool:
        """Whether pp_notebook.map takes the keyword (asked once: a one-item map)."""
        if key not in self.keywords:
            try:
                pp_notebook.map(tasks.identity, [0], **{key: value}).wait()
                self.keywords[key] = True
            except TypeError:
                print(f"{key}: not available", flush=True)
                self.keywords[key] = False
        return self.keywords[key]

    def magic(self) -> Runner:
        """The `%%parallel` cell magic in a real IPython shell, the notebook user's path."""
        def run(fn: Callable, items: list) -> list:
            self.shell.user_ns.update(tasks=tasks, items=items)
            self.shell.run_cell_magic("parallel", "x in items --quiet --no-widget -o out",
                                      f"tasks.{fn.__name__}(x)")
            return self.shell.user_ns.pop("out")["result"].tolist()

        return Runner("%%parallel (magic)", run, engine_pids, kind="pp", settle=settle_engines)

    def ipp(self, chunksize: int) -> Runner:
        view = pp_notebook.cluster.current().client.load_balanced_view()
        return Runner(f"ipyparallel lbview chunksize={chunksize}",
                      lambda fn, items: view.map_sync(fn, items, chunksize=chunksize),
                      engine_pids, settle=settle_engines)

    def executor_map(self, chunksize: int) -> Runner:
        return Runner(f"ProcessPoolExecutor chunksize={chunksize}",
                      lambda fn, items: list(self.executor.map(fn, items, chunksize=chunksize)),
                      lambda: list(self.executor._processes))  # private, but the only handle

    def pool_map(self) -> Runner:
        return Runner("multiprocessing.Pool.map", lambda fn, items: self.mp_pool.map(fn, items),
                      lambda: [p.pid for p in self.mp_pool._pool])  # private, likewise

    def loky(self) -> Runner:
        return Runner("joblib.Parallel (loky)",
                      lambda fn, items: self.parallel(joblib.delayed(fn)(x) for x in items),
                      loky_pids)

    def dask_map(self) -> Runner:
        return Runner("dask client.map + gather",
                      lambda fn, items: self.dask.gather(self.dask.map(fn, items, pure=False)),
                      lambda: list(self.dask.run(os.getpid).values()))

    def thread_map(self) -> Runner:
        """A thread pool in this process: the reference for I/O-bound tasks, not a peer."""
        size = self.threads._max_workers
        return Runner(f"ThreadPoolExecutor({size}) in-process",
                      lambda fn, items: list(self.threads.map(fn, items)),
                      lambda: [os.getpid()], kind="reference", workers=size, in_flight=size)


def open_pools(stack: ExitStack, threads: int) -> Pools:
    """Start and warm every pool; the forking ones first, before any client thread exists."""
    mp_pool = multiprocessing.Pool(WORKERS)
    stack.callback(close_mp_pool, mp_pool)
    executor = ProcessPoolExecutor(WORKERS)
    stack.callback(executor.shutdown, wait=True, cancel_futures=True)
    stack.callback(shut_down_loky)
    parallel = stack.enter_context(joblib.Parallel(n_jobs=WORKERS))
    thread_pool = stack.enter_context(ThreadPoolExecutor(threads))
    warm = list(range(4 * WORKERS))
    mp_pool.map(tasks.identity, warm)
    list(executor.map(tasks.identity, warm))  # its workers fork on the first task
    parallel(joblib.delayed(tasks.identity)(x) for x in warm)
    stack.callback(stop_and_reap, pp_notebook.stop)
    pp_notebook.start(WORKERS)
    pp_notebook.cluster.current().wait_for_info()
    dask = open_dask(stack)
    dask.gather(dask.map(tasks.identity, warm, pure=False))
    return Pools(mp_pool, executor, parallel, thread_pool, dask, open_shell(stack))


def open_dask(stack: ExitStack) -> Client:
    """A LocalCluster of 2 single-threaded worker processes and its client, closed by `stack`.

    No dashboard: it needs no port, so runs by others on this machine cannot collide with it.
    """
    cluster = stack.enter_context(LocalCluster(n_workers=WORKERS, threads_per_worker=1,
                                               processes=True, dashboard_address=None))
    return stack.enter_context(Client(cluster))


def open_shell(stack: ExitStack) -> InteractiveShell:
    """A real IPython shell with `%load_ext pp_notebook` (history in memory)."""
    config = ShellConfig()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)
    stack.callback(InteractiveShell.clear_instance)
    shell.run_line_magic("load_ext", "pp_notebook")
    return shell


def run_pp_notebook(fn: Callable, items: list, **options: Any) -> list:
    """The user's path: map, wait, and the result column of the DataFrame."""
    run = pp_notebook.map(fn, items, **options)
    run.wait()
    return run.result()["result"].tolist()


def engine_pids() -> list[int]:
    return [engine["pid"] for engine in pp_notebook.status()["engines"]]


def settle_engines() -> None:
    """Wait until no engine has work queued or running."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        if all(e["state"] == "idle" for e in pp_notebook.status()["engines"]):
            return
        time.sleep(0.02)
    print(f"WARNING: engines still busy {SETTLE_TIMEOUT_S:g} s after the run returned")


def loky_pids() -> list[int]:
    from joblib.externals.loky import reusable_executor

    executor = reusable_executor._executor  # private, but the only handle on the live one
    return list(executor._processes) if executor is not None else []


# -- stopping what was started ------------------------------------------------------------------

def stop_and_reap(stop: Callable[[], Any], timeout: float = 30.0,
                  cluster_id: str | None = None) -> None:
    """Call `stop`, then wait until every ipyparallel process this one started has ended, and
    pp_notebook's reaper (it exits about 0.1 s after the stop).

    An engine's nanny (ipyparallel's default clusters) outlives the cluster's stop by a few
    seconds, and then no longer counts as our child: wait for it, so that nothing is left.
    With `cluster_id`, only that cluster's processes are waited for: another cluster (the
    peer beside pp_notebook's, in bench_shared) keeps running.
    """
    procs = ipyparallel_processes(cluster_id)
    try:
        stop()
    finally:
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        for proc in alive:
            print(f"WARNING: ipyparallel process {proc.pid} outlived its cluster; ending it")
            proc.terminate()
        psutil.wait_procs(alive, timeout=5)


def ipyparallel_processes(cluster_id: str | None = None) -> list[psutil.Process]:
    """This process's ipyparallel descendants (and pp_notebook's reaper); with `cluster_id`,
    those whose command names it (controller and its schedulers, engines) and their children
    (engines' nannies)."""
    found = [p for p in psutil.Process().children(recursive=True) if is_ipyparallel(p)]
    if cluster_id is None:
        return found
    roots = []
    for process in found:
        try:
            if cluster_id in " ".join(process.cmdline()):
                roots.append(process)
        except psutil.Error:
            pass
    children = []
    for root in roots:
        try:
            children += root.children(recursive=True)
        except psutil.Error:
            pass
    return list({p.pid: p for p in roots + children}.values())


def stop_ipp(cluster: ipp.Cluster) -> None:
    """Stop a peer's ipyparallel cluster and remove what it leaves in the profile (its
    engine-state file stays there otherwise)."""
    stop_and_reap(cluster.stop_cluster_sync, cluster_id=cluster.cluster_id)
    remove_files(cluster_files(cluster.profile_dir, cluster.cluster_id))


def is_ipyparallel(proc: psutil.Process) -> bool:
    """An ipyparallel process (pp_notebook's controller and local engines are ipyparallel's,
    run from `pp_notebook.controller_app` and `engine_app`), or pp_notebook's reaper of one."""
    try:
        command = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return any(name in command for name in (
        "ipyparallel", "pp_notebook.controller_app", "pp_notebook.engine_app",
        "pp_notebook.cluster.reaper"))


def close_mp_pool(pool: Any) -> None:
    pool.close()
    pool.join()


def shut_down_loky() -> None:
    """End joblib's reusable loky workers (they otherwise idle on for 300 s)."""
    from joblib.externals.loky import reusable_executor

    executor = reusable_executor._executor  # private, but the only handle on the live one
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)


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
