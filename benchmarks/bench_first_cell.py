"""The notebook user's first wait: from running the first `%%parallel` cell to its result, in
a real kernel, with and without the opt-in background start (PP_NOTEBOOK_AUTOSTART=2).

The kernel runs `%load_ext pp_notebook` in its first cell; the user then spends `pause`
seconds on other cells (reading data, say) before the first `%%parallel` cell. Without the
opt-in, that cell starts the cluster; with it, the cluster started while the user worked.

    .venv/bin/python benchmarks/bench_first_cell.py [--pauses 0,3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from jupyter_client.manager import start_new_kernel

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from report import markdown_table  # noqa: E402

CELL = "%%parallel x in range(2) --quiet -o first\nx"


def first_cell_s(autostart: bool, pause: float) -> float:
    """Seconds from executing the first `%%parallel` cell to its reply, in a fresh kernel."""
    env = dict(os.environ)
    env.pop("PP_NOTEBOOK_AUTOSTART", None)
    if autostart:
        env["PP_NOTEBOOK_AUTOSTART"] = "2"
    km, kc = start_new_kernel(kernel_name="python3", env=env, startup_timeout=60)
    try:
        kc.execute_interactive("%load_ext pp_notebook", timeout=60)
        time.sleep(pause)
        started = time.perf_counter()
        reply = kc.execute_interactive(CELL, timeout=120)
        elapsed = time.perf_counter() - started
        assert reply["content"]["status"] == "ok", reply["content"]
        kc.execute_interactive("import pp_notebook; pp_notebook.stop()", timeout=60)
        return elapsed
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pauses", default="0,3")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    lines = []
    for pause in (float(p) for p in args.pauses.split(",")):
        times = {on: [first_cell_s(on, pause) for _ in range(args.repeats)]
                 for on in (False, True)}
        off, on = statistics.median(times[False]), statistics.median(times[True])
        lines.append([f"{pause:g}", f"{off:.2f}", f"{on:.2f}", f"{off / on:.1f}×"])
    print(f"first %%parallel cell to its result, 2 engines, median of {args.repeats}")
    print(markdown_table(["pause after %load_ext s", "default s", "PP_NOTEBOOK_AUTOSTART=2 s",
                          "faster"], lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
