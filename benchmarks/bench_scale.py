"""How far one client drives many engines: a sleep workload on 2 … 64 local engines.

Each engine count gets `--waves` sleeps of `--sleep` s per engine, so the ideal wall time is
the same at every size (waves × sleep); the table gives the measured time against it, and the
CPU the client process (its scheduling thread and ipyparallel's IO thread together) and the
controller spent per 1,000 tasks. Sleeps leave the cores free, so 64 engines fit on 2 cores;
what grows with the engine count is the messaging the client and controller do.

Then, on paper: a client spending c s of CPU per task keeps up while engines × (1 / task
duration) < 1 / c tasks/s; the last line prints that ceiling for the largest size measured.

    .venv/bin/python benchmarks/bench_scale.py [--engines 2,8,16,32,64] [--sleep 0.25]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import psutil  # noqa: E402  (after the path set-up above)
from report import markdown_table  # noqa: E402
from tasks import nap  # noqa: E402

import pp_notebook as pp  # noqa: E402
from pp_notebook import cluster as cluster_module  # noqa: E402

TARGET = 1.1
"""Wall time within 1.1x of the ideal, at 64 engines."""


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def measure(engines: int, waves: int, sleep_s: float, repeats: int) -> list[str]:
    """Start `engines` local engines, run the sleeps `repeats` times; one table line."""
    started = time.perf_counter()
    pp.start(engines)
    start_s = time.perf_counter() - started
    controller = psutil.Process(cluster_module.current().controller_pid)
    me = psutil.Process()
    items = [(i, sleep_s) for i in range(engines * waves)]
    pp.map(nap, items[: engines]).result()  # warm: code and payload cached
    walls, client_cpu, controller_cpu = [], 0.0, 0.0
    for _ in range(repeats):
        before = cpu_s(me), cpu_s(controller)
        t0 = time.perf_counter()
        frame = pp.map(nap, items).result()
        walls.append(time.perf_counter() - t0)
        client_cpu += cpu_s(me) - before[0]
        controller_cpu += cpu_s(controller) - before[1]
        assert (frame["status"] == "ok").all(), frame["status"].value_counts()
    pp.stop()
    wall = min(walls)
    ideal = waves * sleep_s
    per_k = 1000 / (len(items) * repeats)
    return [f"{engines}", f"{len(items)}", f"{start_s:.1f}", f"{wall:.3f}", f"{ideal:.2f}",
            f"{wall / ideal:.3f}", f"{client_cpu * per_k:.3f}", f"{controller_cpu * per_k:.3f}",
            f"{len(items) / wall:.0f}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="2,8,16,32,64")
    parser.add_argument("--waves", type=int, default=8)
    parser.add_argument("--sleep", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.engines.split(",")]
    lines = [measure(n, args.waves, args.sleep, args.repeats) for n in sizes]
    print(f"{args.waves} sleeps of {args.sleep} s per engine; best of {args.repeats}; "
          f"{os.cpu_count()} cores")
    print(markdown_table(["engines", "tasks", "start s", "wall s", "ideal s", "× ideal",
                          "client CPU s / 1k tasks", "controller CPU s / 1k tasks",
                          "tasks/s"], lines))
    largest = lines[-1]
    ratio, cpu_per_task = float(largest[5]), float(largest[6]) / 1000
    print(f"\n{largest[0]} engines: {ratio:.3f}× ideal (target ≤ {TARGET}×: "
          f"{'met' if ratio <= TARGET else 'MISSED'}). At {cpu_per_task * 1e3:.2f} ms of client "
          f"CPU a task, one client keeps up with about {1 / cpu_per_task:,.0f} tasks/s: "
          f"e.g. {int(1 / cpu_per_task * 0.1):,} engines on 100 ms tasks, "
          f"{int(1 / cpu_per_task):,} on 1 s tasks.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
