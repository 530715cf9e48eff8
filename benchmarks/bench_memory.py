"""The client's memory per task: no-op tasks at 1e4 … 1e7, pp_notebook.map beside joblib.

Each (runner, size) runs in a fresh Python process, so memory one measurement freed cannot
hide the next one's growth. In it: the runner is started and warmed up on a few items, the
garbage collected, then this process's RSS and USS are read (psutil) and sampled every
SAMPLE_S by a thread while the run goes; the growth is the peak over the value before.

- **pp_notebook.map**: `pp.map(identity, range(n))` on 2 local engines. `run` is the growth
  until `run.wait()` returns (the run's bookkeeping, its item list, and the results);
  `+ frame` the peak through `run.result()`, the merged DataFrame (it holds copies).
- **joblib**: `Parallel(n_jobs=2, return_as="list")` over the same no-ops (loky, its
  automatic batching): the list of results is its whole bookkeeping.

`B/task` is the run's growth per task; `beyond results` takes off the results' own size (the
int objects `identity` returns: what any runner must hold), leaving the runner's cost.

    .venv/bin/python benchmarks/bench_memory.py [--sizes 1e4,1e5,1e6,1e7] [--joblib-max 1e7]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# The engines and loky's workers import `tasks` by name: set this before any of them starts.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import psutil  # noqa: E402  (after the path set-up above)
from report import markdown_table  # noqa: E402
from sampling import sampling  # noqa: E402
from tasks import identity  # noqa: E402

SIZES = "1e4,1e5,1e6,1e7"
SAMPLE_S = 0.05
WARM_ITEMS = 100
MIB = 2 ** 20
TIME_VS_JOBLIB, BEYOND_TARGET_B, TARGETS_FROM = 1.0, 100, 1_000_000
RUNNERS = ("pp_notebook.map", "joblib.Parallel(n_jobs=2)")


class Peak:
    """This process's RSS and USS: before, and the highest seen since (or since `reset`)."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.before = self.read()
        self.rss = self.uss = 0
        self.reset()

    def read(self) -> tuple[int, int]:
        info = self.process.memory_full_info()
        return info.rss, info.uss

    def reset(self) -> None:
        self.rss, self.uss = self.before

    def sample(self) -> None:
        rss, uss = self.read()
        self.rss, self.uss = max(self.rss, rss), max(self.uss, uss)

    def growth(self) -> tuple[int, int]:
        """(RSS, USS) peak growth in bytes over the value before."""
        return self.rss - self.before[0], self.uss - self.before[1]


@contextmanager
def sampled() -> Iterator[Peak]:
    """Sample this process's memory every SAMPLE_S in a thread while the block runs."""
    gc.collect()
    peak = Peak()
    with sampling(peak.sample, SAMPLE_S, "bench-memory"):
        yield peak


def measure_pp(n: int) -> dict[str, Any]:
    """pp_notebook.map of n no-ops on 2 local engines: time and growth, run and frame."""
    import numpy as np

    import pp_notebook as pp

    pp.start(2)
    try:
        pp.map(identity, range(WARM_ITEMS)).result()
        with sampled() as peak:
            start = time.perf_counter()
            run = pp.map(identity, range(n))
            run.wait()
            run_s = time.perf_counter() - start
            peak.sample()
            run_growth = peak.growth()
            frame = run.result()
            total_s = time.perf_counter() - start
        if not (frame["status"] == "ok").all() \
                or not np.array_equal(frame["result"].to_numpy(), np.arange(n)):
            raise AssertionError(f"pp_notebook.map: wrong results {frame.head()}")
        return {"run_s": run_s, "total_s": total_s, "run": run_growth, "frame": peak.growth()}
    finally:
        pp.stop()


def measure_joblib(n: int) -> dict[str, Any]:
    """joblib.Parallel(n_jobs=2) over n no-ops: time and growth (its list is its result)."""
    from joblib import Parallel, delayed

    with Parallel(n_jobs=2, return_as="list") as parallel:
        parallel(delayed(identity)(x) for x in range(WARM_ITEMS))
        with sampled() as peak:
            start = time.perf_counter()
            values = parallel(delayed(identity)(x) for x in range(n))
            total_s = time.perf_counter() - start
    if values != list(range(n)):
        raise AssertionError(f"joblib: wrong results {values[:5]}")
    growth = peak.growth()
    return {"run_s": total_s, "total_s": total_s, "run": growth, "frame": growth}


MEASURES: dict[str, Callable[[int], dict[str, Any]]] = dict(zip(RUNNERS, (measure_pp,
                                                                          measure_joblib)))


def results_bytes(n: int) -> int:
    """The results' own size: the int objects `identity` returns for range(n)."""
    return sum(map(sys.getsizeof, range(256, n)))  # 0 … 255 are shared, cached ints


def in_child(runner: str, n: int) -> dict[str, Any]:
    """One measurement in a fresh interpreter, so earlier runs' freed memory cannot hide it."""
    done = subprocess.run([sys.executable, __file__, "--child", runner, str(n)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{runner} at {n:,}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def line(runner: str, n: int, figures: dict[str, Any]) -> list[str]:
    rss, uss = figures["run"]
    beyond = (uss - results_bytes(n)) / n
    return [runner, f"{n:,}", f"{figures['run_s']:.2f}", f"{figures['total_s']:.2f}",
            f"{rss / MIB:,.0f}", f"{uss / MIB:,.0f}", f"{figures['frame'][1] / MIB:,.0f}",
            f"{uss / n:,.0f}", f"{beyond:,.0f}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=SIZES, help=f"task counts (default {SIZES})")
    parser.add_argument("--joblib-max", type=float, default=1e7,
                        help="the largest size joblib runs (default 1e7)")
    parser.add_argument("--child", nargs=2, metavar=("RUNNER", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        runner, n = args.child
        print(json.dumps(MEASURES[runner](int(n))))
        return 0
    sizes = [int(float(size)) for size in args.sizes.split(",")]
    lines, figures = [], {}
    for n in sizes:
        for runner in RUNNERS:
            if runner in RUNNERS[1:] and n > args.joblib_max:
                continue
            figures[runner, n] = in_child(runner, n)
            lines.append(line(runner, n, figures[runner, n]))
            print(f"  {runner} at {n:,} done", file=sys.stderr, flush=True)
    print(f"no-op tasks on 2 workers; growth of the client's memory over its value before the "
          f"run, peak sampled every {SAMPLE_S * 1e3:g} ms; {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2 ** 30:.0f} GiB")
    print(markdown_table(["runner", "tasks", "run s", "+ frame s", "RSS growth MiB",
                          "USS growth MiB", "+ frame USS MiB", "B/task",
                          "beyond results B/task"], lines))
    for n in sizes:  # the targets are per task at scale: a million tasks and more
        pp, joblib = figures.get((RUNNERS[0], n)), figures.get((RUNNERS[1], n))
        if pp is None or joblib is None or n < TARGETS_FROM:
            continue
        beyond = (pp["run"][1] - results_bytes(n)) / n
        ratio, framed = pp["run_s"] / joblib["run_s"], pp["total_s"] / joblib["run_s"]
        fast, small = ratio <= TIME_VS_JOBLIB, beyond <= BEYOND_TARGET_B
        print(f"{n:,} tasks: pp_notebook {ratio:.2f}× joblib's time ({framed:.2f}× with the "
              f"DataFrame; target ≤ {TIME_VS_JOBLIB:g}×: {'met' if fast else 'MISSED'}), "
              f"{beyond:.0f} B a task beyond the results (target ≤ {BEYOND_TARGET_B}: "
              f"{'met' if small else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
