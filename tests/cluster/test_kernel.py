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

import pytest
from IPython.core.interactiveshell import InteractiveShell

from pp_notebook import load_ipython_extension

from helpers import execute, text_of

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


def _json_of(kc, code: str) -> dict:
    """Run `code`, which prints one JSON line, and return it decoded."""
    reply, outputs = execute(kc, code)
    assert reply["status"] == "ok", (reply, text_of(outputs))
    return json.loads(text_of(outputs).strip().splitlines()[-1])


def test_interrupting_a_parallel_cell_ends_it_as_interrupted_and_keeps_finished_rows(kernel):
    km, kc = kernel
    facts = _json_of(kc, "import json, sys\n"
                         "print(json.dumps({'prefix': sys.prefix}))")
    assert facts["prefix"] == sys.prefix  # this venv's python runs the kernel
    reply, outputs = execute(kc, "%load_ext pp_notebook\n%pp start 2", timeout=60)
    assert reply["status"] == "ok", text_of(outputs)
    assert "(local): 2 engines" in text_of(outputs)

    msg_id = kc.execute(SLOW)
    outputs = []
    deadline = time.monotonic() + 20
    while "2/6 done" not in text_of(outputs):  # the text progress line: items 0 and 1 have ended
        assert time.monotonic() < deadline, f"items 0 and 1 did not end: {text_of(outputs)!r}"
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
    shown = text_of(outputs)
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

    reply, outputs = execute(kc, AGAIN)
    assert reply["status"] == "ok", text_of(outputs)
    facts = _json_of(kc, "print(json.dumps({'status': again['status'].tolist(), "
                         "'result': again['result'].tolist()}))")
    assert facts == {"status": ["ok"] * 4, "result": [100, 101, 102, 103]}, facts

    reply, outputs = execute(kc, "%pp stop")
    assert reply["status"] == "ok" and "stopped cluster" in text_of(outputs), text_of(outputs)


@pytest.fixture
def autostart(monkeypatch):
    """The opt-in: the kernel about to start finds PP_NOTEBOOK_AUTOSTART=2."""
    monkeypatch.setenv("PP_NOTEBOOK_AUTOSTART", "2")


def test_loading_the_extension_starts_nothing_unless_asked(kernel):
    km, kc = kernel
    reply, outputs = execute(kc, "%load_ext pp_notebook")
    assert reply["status"] == "ok", text_of(outputs)
    time.sleep(1.0)  # a background start, were there one, would be under way by now
    facts = _json_of(kc, "import json, threading, pp_notebook as pp\n"
                         "print(json.dumps({'running': pp.status()['running'], 'threads': "
                         "[t.name for t in threading.enumerate()]}))")
    assert facts["running"] is False, facts
    assert "pp_notebook-autostart" not in facts["threads"], facts


def test_autostart_has_the_cluster_ready_for_the_first_cell(autostart, kernel):
    km, kc = kernel
    loaded = time.monotonic()
    reply, outputs = execute(kc, "%load_ext pp_notebook")
    assert reply["status"] == "ok", text_of(outputs)
    assert time.monotonic() - loaded < 5  # the start goes on in the background
    code = "import json, pp_notebook as pp\nprint(json.dumps(pp.status()))"
    deadline = time.monotonic() + 60
    while len((status := _json_of(kc, code))["engines"]) < 2:  # no cell asked for engines
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    reply, outputs = execute(kc, AGAIN)
    assert reply["status"] == "ok", text_of(outputs)
    after = _json_of(kc, code)
    assert after["cluster_id"] == status["cluster_id"]  # the first cell used that cluster
    assert [e["id"] for e in after["engines"]] == [e["id"] for e in status["engines"]]


def test_a_wrong_autostart_value_is_refused_when_the_extension_loads(monkeypatch):
    monkeypatch.setenv("PP_NOTEBOOK_AUTOSTART", "yes")
    shell = InteractiveShell.instance()  # `%load_ext` would skip an extension loaded before
    try:
        with pytest.raises(ValueError,
                           match=r"PP_NOTEBOOK_AUTOSTART.*'auto' or an integer.*'yes'"):
            load_ipython_extension(shell)
    finally:
        InteractiveShell.clear_instance()
