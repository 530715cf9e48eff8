"""The live dashboard's cost: the same CPU-bound map with and without it, in a real kernel;
and the widget's comm traffic for a map of 1,000 and of 100,000 tasks.

The dashboard only draws in a Jupyter kernel (comm messages to a frontend), so the
comparison runs inside one: nbclient executes a small notebook with this environment's
kernel. Rounds alternate (plain, dashboard, plain, ...) so drift hits both alike; the time is
the Run's own wall time. Target (issue: dashboard 2): at most 2% slower. Traffic: every
comm message the widget sends (its JSON size), counted by wrapping its comm's publish_msg;
target: at most ~7 messages a second, and bytes per second that do not grow with the tasks
(1,000 tasks of 10 ms, 100,000 of 50 µs: runs of a few seconds each).

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
from pp_notebook.views.dashboard import Dashboard

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

def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds

def traffic(tasks, seconds):
    run = pp.map(spin, [seconds] * tasks)
    view, sent = Dashboard(run), []
    publish = view.widget.comm.publish_msg
    def counted(msg_type, data=None, **keys):
        if msg_type == "comm_msg":
            sent.append(len(json.dumps(data, default=str)))
        return publish(msg_type, data=data, **keys)
    view.widget.comm.publish_msg = counted
    view.start()
    run.wait()
    view.stop()
    return {{"seconds": run.elapsed_s, "messages": len(sent), "bytes": sum(sent),
             "largest": max(sent, default=0)}}

times["traffic"] = {{tasks: traffic(tasks, seconds)
                    for tasks, seconds in ((1_000, 0.01), (100_000, 0.00005))}}
pp.stop()
print("RESULT " + json.dumps(times))
"""


def measure(rounds: int, tasks: int) -> dict:
    """Run the comparison in a fresh kernel: {mode: [wall seconds per round]}, and
    {"traffic": {tasks: {seconds, messages, bytes, largest}}}."""
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
    print(f"  overhead           {100 * (shown / plain - 1):+.1f}%  (target: at most 2%)")
    print("widget comm traffic (JSON bytes of the messages the kernel sends)")
    for count, seen in times["traffic"].items():
        seconds = max(seen["seconds"], 1e-9)
        print(f"  {int(count):>7,} tasks in {seconds:.2f} s: {seen['messages']} messages "
              f"({seen['messages'] / seconds:.1f}/s), {seen['bytes'] / seconds / 1000:.1f} kB/s, "
              f"largest {seen['largest'] / 1000:.1f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
