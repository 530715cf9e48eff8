"""Interrupting a real kernel during a `%%parallel` cell, through jupyter_client.

The kernel runs this interpreter: its kernelspec is written for the test and found first
through a temporary JUPYTER_PATH (the test checks the kernel's sys.prefix too). Every process
under the kernel is recorded while the test runs; at the end the kernel's cluster is stopped,
the kernel is shut down, and whatever it started that is still alive is killed by pid and
start time (and the test errors), so an interrupted run cannot leave engines behind.
"""

import json
import queue
import sys
import time

import psutil
import pytest
from jupyter_client.manager import start_new_kernel

from helpers import Descendants, this_interpreter_kernel

KERNEL = "pp-notebook-kernel-test"

# Items 0 and 1 end at once; the others would sleep far longer than the test.
SLOW = """\
%%parallel x in range(6) --batch 1 --no-widget -o slow
import time
if x >= 2:
    time.sleep(30)
{"y": x * 10}"""

AGAIN = """\
%%parallel x in range(4) --quiet -o again
x + 100"""


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """(manager, client) of a kernel running this interpreter; at the end its cluster is
    stopped, the kernel shut down and any process it started that survives is killed."""
    this_interpreter_kernel(tmp_path, monkeypatch, KERNEL)
    try:
        km, kc = start_new_kernel(kernel_name=KERNEL, startup_timeout=60, cwd=str(tmp_path))
    except RuntimeError as exc:  # the kernel did not start or answer: nothing to test
        pytest.skip(f"a kernel of this interpreter could not start: {exc}")
    descendants = Descendants(km.provisioner.pid)
    leftover: list[psutil.Process] = []
    try:
        yield km, kc
    finally:
        descendants.record()
        try:  # a failed test may leave the run going: stop it, then the cluster
            if km.is_alive():
                km.interrupt_kernel()
                kc.execute_interactive("import pp_notebook; pp_notebook.stop()", timeout=20,
                                       output_hook=lambda msg: None)
        except Exception:
            pass
        descendants.record()
        kc.stop_channels()
        km.shutdown_kernel(now=False)
        leftover = descendants.end_survivors()
    assert not leftover, f"still running after the kernel's shutdown: {leftover}"


def _execute(kc, code: str, timeout: float = 30) -> tuple[dict, list[dict]]:
    """Run `code`; its execute_reply content and the iopub messages it caused."""
    outputs: list[dict] = []
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=outputs.append)
    return reply["content"], outputs


def _text(outputs: list[dict]) -> str:
    """What the messages showed as text: streams, results and displays, errors."""
    parts = []
    for msg in outputs:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            parts.append(content["text"])
        elif kind in ("execute_result", "display_data", "update_display_data"):
            parts.append(content["data"].get("text/plain", ""))
        elif kind == "error":
            parts.append(f"{content['ename']}: {content['evalue']}")
    return "".join(parts)


def _json_of(kc, code: str) -> dict:
    """Run `code`, which prints one JSON line, and return it decoded."""
    reply, outputs = _execute(kc, code)
    assert reply["status"] == "ok", (reply, _text(outputs))
    return json.loads(_text(outputs).strip().splitlines()[-1])


def test_interrupting_a_parallel_cell_ends_it_as_interrupted_and_keeps_finished_rows(kernel):
    km, kc = kernel
    facts = _json_of(kc, "import json, sys\n"
                         "print(json.dumps({'prefix': sys.prefix}))")
    assert facts["prefix"] == sys.prefix  # this venv's python runs the kernel
    reply, outputs = _execute(kc, "%load_ext pp_notebook\n%pp start 2", timeout=60)
    assert reply["status"] == "ok", _text(outputs)
    assert "(local): 2 engines" in _text(outputs)

    msg_id = kc.execute(SLOW)
    outputs = []
    deadline = time.monotonic() + 20
    while "2/6 done" not in _text(outputs):  # the text progress line: items 0 and 1 have ended
        assert time.monotonic() < deadline, f"items 0 and 1 did not end: {_text(outputs)!r}"
        try:
            msg = kc.get_iopub_msg(timeout=0.2)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            outputs.append(msg)
    time.sleep(0.5)  # well inside the sleeps of items 2 and 3
    interrupted_at = time.monotonic()
    km.interrupt_kernel()

    while True:  # the reply: long before the 30 s sleeps would have ended
        reply = kc.get_shell_msg(timeout=15)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    reply_after = time.monotonic() - interrupted_at
    while True:  # the rest of the cell's output, up to the kernel's idle
        msg = kc.get_iopub_msg(timeout=10)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        outputs.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break

    content = reply["content"]
    assert content["status"] == "error", content
    assert content["ename"] == "RunInterrupted", content
    assert "`slow`" in content["evalue"], content["evalue"]  # where the kept results are
    assert reply_after < 5, f"the cell ended {reply_after:.1f} s after the interrupt"
    shown = _text(outputs)
    assert "6 tasks · 2 ok · 4 cancelled" in shown, shown  # the summary, before the error
    errors = [m["content"] for m in outputs if m["msg_type"] == "error"]
    assert [e["ename"] for e in errors] == ["RunInterrupted"], errors

    facts = _json_of(kc, """\
import json, sys, pp_notebook
print(json.dumps({
    "interrupt": isinstance(sys.last_value, KeyboardInterrupt),
    "type": type(sys.last_value).__name__,
    "same_run": sys.last_value.run is pp_notebook.last_run(),
    "index": slow.index.name, "tasks": slow.index.tolist(), "x": slow["x"].tolist(),
    "status": slow["status"].tolist(), "y": slow["y"].head(2).tolist(),
}))""")
    assert facts["type"] == "RunInterrupted" and facts["interrupt"] and facts["same_run"], facts
    assert facts["index"] == "task" and facts["tasks"] == list(range(6)), facts
    assert facts["x"] == list(range(6)), facts
    assert facts["status"] == ["ok", "ok"] + ["cancelled"] * 4, facts
    assert facts["y"] == [0, 10], facts

    reply, outputs = _execute(kc, AGAIN)
    assert reply["status"] == "ok", _text(outputs)
    facts = _json_of(kc, "print(json.dumps({'status': again['status'].tolist(), "
                         "'result': again['result'].tolist()}))")
    assert facts == {"status": ["ok"] * 4, "result": [100, 101, 102, 103]}, facts

    reply, outputs = _execute(kc, "%pp stop")
    assert reply["status"] == "ok" and "stopped cluster" in _text(outputs), _text(outputs)
