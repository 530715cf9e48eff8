"""Checkpoint and resume: finished items survive the client's death and are not run again."""

import json
import signal
import subprocess
import sys
import textwrap

import pytest

import pp_notebook as pp
from pp_notebook.checkpoint import Checkpoint

from helpers import pid_alive, wait_until

ITEMS = 60


def _work_script(checkpoint, log, pids_file) -> str:
    return textwrap.dedent(f"""
        import json, os, time, pp_notebook as pp
        pp.start(2)
        handle = pp.cluster.current()
        pids = [e["pid"] for e in pp.status()["engines"]]
        pids.append(handle.controller_pid)
        open({str(pids_file)!r}, "w").write(json.dumps(pids))

        def work(x):
            with open({str(log)!r}, "a") as log:
                log.write(f"{{x}}\\n")
            time.sleep(0.1)
            return {{"x": x, "square": x * x}}

        pp.map(work, range({ITEMS}), checkpoint={str(checkpoint)!r}).wait()
    """)


def _computed(log) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def test_a_client_killed_mid_run_resumes_without_recomputing_finished_items(cluster, tmp_path):
    checkpoint, log, pids_file = tmp_path / "run.ckpt", tmp_path / "computed", tmp_path / "pids"
    client = subprocess.Popen([sys.executable, "-c", _work_script(checkpoint, log, pids_file)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: Checkpoint.saved_count(checkpoint) >= ITEMS // 3, 120), \
            client.stderr.read1().decode() if client.poll() is not None else "no progress"
    finally:
        client.send_signal(signal.SIGKILL)  # no atexit, no flush: the hard way
        client.wait()
    saved = Checkpoint.saved_count(checkpoint)
    assert ITEMS // 3 <= saved < ITEMS
    # The cluster of the killed client does not outlive it.
    orphans = json.loads(pids_file.read_text())
    assert wait_until(lambda: not any(pid_alive(p) for p in orphans), 20), orphans

    computed_before = _computed(log)
    run = pp.map(lambda x: {"x": x, "square": x * x}, range(ITEMS), checkpoint=checkpoint)
    assert run.wait(120)
    df = run.result()
    assert list(df["x"]) == list(range(ITEMS))
    assert list(df["square"]) == [x * x for x in range(ITEMS)]
    assert (df["status"] == "ok").all()
    resumed = [r.task for r in run.records if r.resumed]
    assert len(resumed) == saved
    # the resumed items were computed once, in the killed run, and not again now
    assert all(computed_before.count(x) == 1 for x in resumed)
    assert sum(1 for r in run.records if not r.resumed and r.attempts == 1) == ITEMS - saved


def test_key_names_items_that_do_not_pickle_stably(cluster, tmp_path):
    path = tmp_path / "keyed.ckpt"
    items = [{"name": f"n{i}", "tags": {"a", "b", f"t{i}"}} for i in range(6)]
    first = pp.map(lambda d: len(d["tags"]), items, checkpoint=path, key=lambda d: d["name"])
    assert first.wait(60)
    again = pp.map(lambda d: -1, items, checkpoint=path, key=lambda d: d["name"])
    assert again.wait(60)
    assert list(again.result()["result"]) == [3] * 6
    assert all(r.resumed for r in again.records)
    assert "6 resumed from the checkpoint" in again.summary().line()


def test_failed_items_are_not_saved_and_run_again(cluster, tmp_path):
    path = tmp_path / "failed.ckpt"

    def half(x):
        if x % 2:
            raise ValueError(x)
        return x

    assert pp.map(half, range(6), checkpoint=path).wait(60)
    again = pp.map(lambda x: x, range(6), checkpoint=path)
    assert again.wait(60)
    assert list(again.result()["status"]) == ["ok"] * 6
    assert [r.resumed for r in again.records] == [True, False] * 3


@pytest.mark.parametrize("bad, message", [
    (dict(key=lambda x: x), "key names items in a checkpoint: give checkpoint too"),
    (dict(checkpoint="x.ckpt", key=3), "key must be a function"),
])
def test_bad_checkpoint_options_are_refused(cluster, bad, message):
    with pytest.raises((TypeError, ValueError), match=message):
        pp.map(lambda x: x, range(3), **bad)


def test_a_file_that_is_not_a_checkpoint_is_refused_and_left_alone(cluster, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my precious notes\n")
    with pytest.raises(ValueError, match="not a pp_notebook checkpoint"):
        pp.map(lambda x: x, range(3), checkpoint=notes)
    assert notes.read_text() == "my precious notes\n"
    with pytest.raises(ValueError, match="cannot use .* as a checkpoint"):
        pp.map(lambda x: x, range(3), checkpoint=tmp_path)  # a folder
