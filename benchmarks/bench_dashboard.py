"""The live dashboard's cost: the same CPU-bound map with and without it, in a real kernel.

The dashboard only draws in a Jupyter kernel (comm messages to a frontend), so the
comparison runs inside one: nbclient executes a small notebook with this environment's
kernel. Rounds alternate (plain, dashboard, plain, ...) so drift hits both alike; the time is
the Run's own wall time. Target (issue: dashboard): under 5% slower.

Run from the repository root: `python benchmarks/bench_dashboard.py [--rounds N] [--tasks N]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import nbformat
from nbclient import NotebookClient

CELL = """
import json, time
import pp_notebook as pp
from pp_notebook.views import progress

def busy(x):
    end = time.perf_counter() + 0.01
    while time.perf_counter() < end:
        pass
    return x

pp.start(2)
pp.map(busy, range(50)).wait()          # warm the engines
times = {{"plain": [], "dashboard": []}}
for _ in range({rounds}):
    for mode in times:
        run = pp.map(busy, range({tasks}))
        view = progress(run, widget=True) if mode == "dashboard" else None
        run.wait()
        if view is not None:
            view.stop()
        times[mode].append(run.elapsed_s)
pp.stop()
print("RESULT " + json.dumps(times))
"""


def measure(rounds: int, tasks: int) -> dict[str, list[float]]:
    """Run the comparison in a fresh kernel; {mode: [wall seconds per round]}."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        CELL.format(rounds=rounds, tasks=tasks))])
    NotebookClient(notebook, timeout=900, kernel_name="python3").execute()
    for output in notebook.cells[0].outputs:
        for line in output.get("text", "").splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT "):])
    raise RuntimeError("the benchmark notebook printed no result")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=300, help="10 ms CPU tasks per map")
    args = parser.parse_args(argv)
    times = measure(args.rounds, args.tasks)
    plain, shown = statistics.median(times["plain"]), statistics.median(times["dashboard"])
    print(f"{args.tasks} CPU tasks of 10 ms on 2 engines, median of {args.rounds} rounds")
    for label, key, value in (("without dashboard", "plain", plain),
                              ("with dashboard   ", "dashboard", shown)):
        every = ", ".join(f"{t:.3f}" for t in times[key])
        print(f"  {label}  {value:.3f} s   (all: {every})")
    print(f"  overhead           {100 * (shown / plain - 1):+.1f}%  (target: under 5%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
