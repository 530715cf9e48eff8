"""A real notebook, executed by a real kernel of this environment, uses the magics end to end.

The kernel is chosen by a kernelspec written for this test: its argv is this interpreter, and
it is found first through a temporary JUPYTER_PATH, so neither a `python3` spec elsewhere on
the machine nor the PATH decides which Python runs the notebook. Every process under the kernel
is recorded after each cell; whatever is still alive at the end is killed by those pids (and
the test fails), so a broken run cannot leave engines behind.
"""


import nbformat
import psutil
import pytest
from nbclient import NotebookClient

from helpers import this_interpreter_kernel

KERNEL = "pp-notebook-e2e"

DEFINITIONS = '''\
def slow_square(n):
    import time
    if n == 3:
        raise ValueError("three is unlucky")
    if n == 5:
        time.sleep(10)
    return n * n


class Scaler:
    def __init__(self, factor):
        self.factor = factor

    def apply(self, value):
        return value * self.factor


scaler = Scaler(10)
pairs = [(i, f"item-{i}") for i in range(8)]'''

FOREGROUND = '''\
%%parallel i, label in pairs --timeout 1 -o df
y = slow_square(i)
{"label": label, "y": y, "root": scaler.apply(math.sqrt(y))}'''

FOREGROUND_CHECKS = '''\
import pp_notebook
by_task = df
assert list(df.columns) == ["i", "label", "y", "root", "status", "engine", "host", "duration_s",
                            "attempts", "error"], list(df.columns)
assert df.index.name == "task" and str(df["i"].dtype) == "int64" and str(df["y"].dtype) == "Int64"
traceback = pp_notebook.last_run().errors().loc[3, "traceback"]
assert "Cell In[3], line 4, in slow_square" in traceback, traceback  # as IPython names cells
assert "Cell In[5], line 2, in <cell>" in traceback, traceback
assert list(df["status"]) == ["ok"] * 3 + ["error", "ok", "timeout", "ok", "ok"], df["status"]
assert by_task.loc[3, "error"] == "ValueError: three is unlucky"
assert by_task.loc[5, "error"].startswith("TaskTimeout")
assert by_task.loc[4, "y"] == 16 and by_task.loc[4, "root"] == 40.0
assert by_task.loc[7, "label"] == "item-7"
print("foreground checks passed")'''

BACKGROUND = '''\
%%parallel x in range(20) --background -o bg
import time
time.sleep(0.05)
math.factorial(x)'''

BACKGROUND_CHECKS = '''\
assert bg.wait(60)
finished = bg.result()
assert list(finished["result"]) == [math.factorial(x) for x in range(20)]
assert (finished["status"] == "ok").all()
print("background checks passed")'''

CELLS = ["%load_ext pp_notebook", "%pp start 2", DEFINITIONS, "import math", FOREGROUND,
         FOREGROUND_CHECKS, BACKGROUND, BACKGROUND_CHECKS, "%pp stop"]


@pytest.fixture
def kernel_name(tmp_path, monkeypatch):
    return this_interpreter_kernel(tmp_path, monkeypatch, KERNEL)


def texts(cell) -> str:
    """Everything a cell showed as text: streams, results, displays."""
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif output["output_type"] == "error":
            parts.append(f"{output['ename']}: {output['evalue']}")
        else:
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_a_notebook_maps_cells_over_its_own_cluster(tmp_path, kernel_name):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    client = NotebookClient(notebook, kernel_name=kernel_name, timeout=120, allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}})
    spawned: dict[int, psutil.Process] = {}

    def record(**_):
        try:
            kernel = psutil.Process(client.km.provisioner.pid)
            for process in [kernel, *kernel.children(recursive=True)]:
                spawned.setdefault(process.pid, process)
        except psutil.NoSuchProcess:  # the kernel died: the assertions below will say so
            pass

    client.on_cell_executed = record
    try:
        client.execute()
    finally:
        # Engine nannies exit a few seconds after their engine (they tell the gone controller).
        _, leftover = psutil.wait_procs(list(spawned.values()), timeout=10)
        for process in leftover:
            process.kill()  # psutil checks the start time: never another process with this pid
    assert not leftover, f"still running after the notebook: {[p.pid for p in leftover]}"
    assert len(spawned) >= 4  # the kernel, a controller, two engines

    shown = [texts(cell) for cell in notebook.cells]
    errors = [(i, o["ename"], o["evalue"]) for i, cell in enumerate(notebook.cells)
              for o in cell["outputs"] if o["output_type"] == "error"]
    assert not errors, errors
    assert "(local): 2 engines" in shown[1]
    assert "8 tasks · 6 ok · 2 failed (1 error, 1 timeout)" in shown[4]
    assert "ValueError: three is unlucky" in shown[4]  # the failures table
    assert "foreground checks passed" in shown[5]
    # the line said "running in the background" and was updated in place once the run ended
    assert "20 tasks ran in the background as `bg` and have finished: 20 tasks · 20 ok" \
        in shown[6] and "running in the background" not in shown[6]
    assert "background checks passed" in shown[7]
    assert "stopped cluster" in shown[8]
