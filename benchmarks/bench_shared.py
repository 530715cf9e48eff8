"""The common analytics cell on a big shared frame, side by side in one run: group means over a
4,000,000 x 5 frame (160 MB), 40 tasks on 2 workers, by pp_notebook, joblib, dask
(`scatter`), ipyparallel (`push`) and a serial loop in this process.

Run 1 uses a frame the workers have not seen; run 2 the same frame again (the notebook's
second run of the cell). Worker memory is the growth of the workers' summed PSS from before
run 1 to after run 2. Prints a table and the pp / joblib ratios against the targets (run 1
<= 1.5x, run 2 <= 1.25x, memory <= 1.5x). Then pp_notebook alone on 8 engines of this host:
their summed PSS growth against the frame's size (target <= 1.2x: one copy, mapped by all).

    .venv/bin/python benchmarks/bench_shared.py [--rows N] [--repeats N]
"""

from __future__ import annotations

import argparse
import gc
import glob
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import ipyparallel as ipp  # noqa: E402  (after the path set-up above)
import joblib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import psutil  # noqa: E402
from dask.distributed import Client, LocalCluster  # noqa: E402
from runners import WORKERS, loky_pids, shut_down_loky, stop_and_reap, stop_ipp  # noqa: E402
from sampling import sampling  # noqa: E402
from tasks import group_mean  # noqa: E402

import pp_notebook as pp  # noqa: E402

KEYS = list(range(40))
TARGETS = {"run 1": 1.5, "run 2": 1.25, "memory": 1.5}
SAMPLE_S = 0.05
SEGMENTS = "/dev/shm/pp_notebook-"
MANY_ENGINES, MANY_TARGET = 8, 1.2
"""With 8 engines on one host, the workers' total memory growth stays within 1.2x the frame."""


def make_frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"g": rng.integers(0, len(KEYS), rows), "x": rng.random(rows),
                         "y": rng.random(rows), "z": rng.random(rows),
                         "w": rng.integers(0, 1000, rows)})


def pss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_full_info().pss
        except psutil.Error:
            pass
    return total / 2**20


def host_memory_mb(pids: list[int]) -> float:
    """The workers' memory with the shared segments counted whole, once: their summed PSS,
    less their share of the mapped /dev/shm segments, plus those segments' full size (a
    segment's pages are in memory whether or not a task has touched them)."""
    mapped = 0
    for pid in pids:
        try:
            mapped += sum(m.pss for m in psutil.Process(pid).memory_maps()
                          if m.path.startswith(SEGMENTS))
        except psutil.Error:
            pass
    segments = sum(os.stat(path).st_size for path in glob.glob(SEGMENTS + "*"))
    return pss_mb(pids) + (segments - mapped) / 2**20


class Peer:
    """One way to run the cell: `run(frame)` maps group_mean over KEYS; `pids()` its workers."""

    def __init__(self, name: str, run: Callable[[pd.DataFrame], list],
                 pids: Callable[[], list[int]]) -> None:
        self.name, self.run, self.pids = name, run, pids


def warm_engines() -> None:
    """Have every engine of the kernel's cluster load pandas."""
    cluster = pp.cluster.current()
    cluster.client[cluster.live_ids()].execute("import pandas", block=True)


def peers(stack: ExitStack) -> list[Peer]:
    parallel = stack.enter_context(joblib.Parallel(n_jobs=WORKERS, max_nbytes="1M"))
    stack.callback(shut_down_loky)
    parallel(joblib.delayed(abs)(x) for x in range(4))
    stack.callback(stop_and_reap, pp.stop)
    pp.start(WORKERS)
    pp.cluster.current().wait_for_info()
    cluster = stack.enter_context(LocalCluster(n_workers=WORKERS, threads_per_worker=1,
                                               processes=True, dashboard_address=None))
    dask = stack.enter_context(Client(cluster))
    ipp_cluster = ipp.Cluster(n=WORKERS, log_level=40)
    ipp_client = ipp_cluster.start_and_connect_sync()
    stack.callback(stop_ipp, ipp_cluster)
    view = ipp_client[:]
    view.use_cloudpickle()

    # Every runner's workers have pandas loaded before the first measure: the rows measure
    # the frame, not the library (an engine imports pandas only when a task needs it).
    parallel(joblib.delayed(__import__)("pandas") for _ in range(4 * WORKERS))
    warm_engines()
    dask.run(__import__, "pandas")
    view.execute("import pandas", block=True)

    def pp_map(frame: pd.DataFrame) -> list:
        return pp.map(lambda k: group_mean(frame, k), KEYS).result()["result"].tolist()

    def dask_map(frame: pd.DataFrame) -> list:
        shared = dask.scatter(frame, broadcast=True)
        return dask.gather(dask.map(group_mean, [shared] * len(KEYS), KEYS, pure=False))

    def ipp_map(frame: pd.DataFrame) -> list:
        view.push({"frame": frame}, block=True)
        return view.map_sync(lambda k: __import__("tasks").group_mean(frame, k), KEYS)  # noqa: F821

    return [
        Peer("serial loop", lambda frame: [group_mean(frame, k) for k in KEYS], lambda: []),
        Peer("joblib (loky, memmapped)",
             lambda frame: parallel(joblib.delayed(group_mean)(frame, k) for k in KEYS),
             loky_pids),
        Peer("pp_notebook.map (frame captured)", pp_map,
             lambda: [e["pid"] for e in pp.status()["engines"]]),
        Peer("dask (scatter broadcast)", dask_map,
             lambda: list(dask.run(os.getpid).values())),
        Peer("ipyparallel (push)", ipp_map,
             lambda: list(ipp_client[:].apply_sync(os.getpid))),
    ]


def measure(peer: Peer, rows: int, seed: int,
            memory: Callable[[list[int]], float] = pss_mb) -> dict[str, float]:
    frame = make_frame(rows, seed)  # a frame these workers have never seen
    expected = [group_mean(frame, k) for k in KEYS]
    gc.collect()
    before = memory(peer.pids())
    times = []
    for _ in range(2):
        started = time.perf_counter()
        values = peer.run(frame)
        times.append(time.perf_counter() - started)
        assert np.allclose(values, expected), peer.name
    kept = memory(peer.pids()) - before
    # A third run, sampled (not timed): joblib maps its memmaps only while a call runs, so
    # what stays after a run is not what it used.
    seen = [kept]
    with sampling(lambda: seen.append(memory(peer.pids()) - before), SAMPLE_S, "pss"):
        peer.run(frame)
    return {"run 1": times[0], "run 2": times[1], "memory": max(seen), "kept": kept}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    frame_mb = make_frame(args.rows, 0).memory_usage().sum() / 1e6
    with ExitStack() as stack:
        everyone = peers(stack)
        results: dict[str, list[dict[str, float]]] = {p.name: [] for p in everyone}
        for repeat in range(args.repeats):  # interleaved: drift hits every peer alike
            for index, peer in enumerate(everyone):
                results[peer.name].append(measure(peer, args.rows, 1 + repeat * 10 + index))
        pp.scale(MANY_ENGINES)
        pp.cluster.current().wait_for_info()
        warm_engines()
        pp_peer = next(p for p in everyone if p.name.startswith("pp_notebook"))
        many = measure(pp_peer, args.rows, 999, host_memory_mb)
    print(f"group means of a {args.rows:,} x 5 frame ({frame_mb:.0f} MB), {len(KEYS)} tasks, "
          f"{WORKERS} workers; median of {args.repeats}")
    print("| runner | run 1 s | run 2 s | worker memory growth MB (peak in a run) | kept "
          "after the runs MB |\n|---|---|---|---|---|")
    medians = {}
    for name, samples in results.items():
        medians[name] = {key: statistics.median(s[key] for s in samples)
                         for key in ("run 1", "run 2", "memory", "kept")}
        m = medians[name]
        memory = ("—", "—") if name == "serial loop" else (f"{m['memory']:.0f}",
                                                          f"{m['kept']:.0f}")
        print(f"| {name} | {m['run 1']:.3f} | {m['run 2']:.3f} | {memory[0]} | {memory[1]} |")
    pp_row, joblib_row = medians["pp_notebook.map (frame captured)"], \
        medians["joblib (loky, memmapped)"]
    print("\n| pp / joblib | ratio | target | |\n|---|---|---|---|")
    for key, target in TARGETS.items():
        ratio = pp_row[key] / max(joblib_row[key], 1e-9)
        print(f"| {key} | {ratio:.2f}× | ≤ {target}× | {'met' if ratio <= target else 'MISSED'} |")
    ratio = many["memory"] * 2**20 / (frame_mb * 1e6)  # PSS is in MiB
    print(f"\npp_notebook on {MANY_ENGINES} engines: run 1 {many['run 1']:.3f} s, run 2 "
          f"{many['run 2']:.3f} s, workers and shared segments +{many['memory']:.0f} MiB "
          f"for a {frame_mb:.0f} MB frame: {ratio:.2f}× "
          f"(≤ {MANY_TARGET}× {'met' if ratio <= MANY_TARGET else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
