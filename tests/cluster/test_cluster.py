"""The kernel's one cluster: status, reuse, scaling, connecting elsewhere, clean exits."""

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import ipyparallel as ipp
import pytest
from ipyparallel.cluster import launcher as launcher_module

import pp_notebook as pp
from pp_notebook.cluster import finished_runs
from pp_notebook.cluster import handle as handle_module
from pp_notebook.cluster.files import CLUSTER_ID_PREFIX, cluster_files, remove_files
from pp_notebook.cluster.handle import start_cluster
from pp_notebook.engine import leftovers

from helpers import held_runs, pid_alive, wait_until


def run_script(code: str, timeout: float = 120, env: dict | None = None,
               returncode: int = 0) -> dict:
    """Run a Python script in a fresh interpreter; it prints one JSON line last."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env)
    assert done.returncode == returncode, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_status_lists_each_live_engine(cluster):
    status = pp.status()
    assert status["running"] and status["local"] and status["cluster_id"]
    engines = status["engines"]
    assert [e["id"] for e in engines] == sorted(cluster.live_ids())
    for engine in engines:
        assert pid_alive(engine["pid"]) and engine["host"]
    # the controller learns of finished tasks a moment after the client: wait for it to agree
    assert wait_until(lambda: all(e["state"] == "idle" for e in pp.status()["engines"]), 10)


def test_an_engine_flushes_what_was_printed_and_skips_the_flush_when_nothing_was(cluster):
    """Set-up makes ipykernel's per-request flush lazy: printed output is still flushed (and
    reaches ipyparallel's client), an idle stream is not waited on."""
    def probe():
        import sys
        idle = sys.stdout._flush_pending
        print("printed on the engine")
        pending = sys.stdout._flush_pending
        sys.stdout.flush()
        return idle, pending, sys.stdout._flush_pending, hasattr(sys.stdout.flush, "pp_lazy")

    for eid in cluster.live_ids():
        result = cluster.client[eid].apply_async(probe)
        assert result.get(timeout=10) == (False, True, False, True)
        result.wait_for_output(10)
        assert result.stdout == "printed on the engine\n"


def test_a_finished_runs_function_leaves_its_engines_with_the_next_batch_or_soon_after(
        cluster, monkeypatch):
    """A loop of runs sends no request of its own to forget each one's function: the next
    run's batches take the keys along. Without a next run, the engines are told once
    FORGET_AFTER_S has passed (or at once, on a flush: a connected cluster's disconnect)."""
    monkeypatch.setattr(finished_runs, "FORGET_AFTER_S", 60.0)
    first = pp.map(abs, range(20), batch=1)
    first.result()
    second = pp.map(abs, range(20), batch=1)  # each engine gets some of its batches
    second.result()
    held = held_runs(cluster)
    assert all(first.key not in runs and second.key in runs for runs in held), held
    cluster.finished_runs.flush()
    assert wait_until(lambda: not any(second.key in runs for runs in held_runs(cluster)), 10,
                      interval=0.1)
    monkeypatch.setattr(finished_runs, "FORGET_AFTER_S", 0.2)
    third = pp.map(abs, range(20), batch=1)
    third.result()
    assert wait_until(lambda: not any(third.key in runs for runs in held_runs(cluster)), 10,
                      interval=0.1)


def test_local_engines_and_their_controller_do_no_per_request_work_that_nobody_reads(cluster):
    """At INFO, ipyparallel logs each request on its engine and in the controller, and an
    engine publishes a "busy" status that nothing reads: CPU for every batch. Local engines
    run a kernel without it, and they and their controller log warnings only."""
    def kernel_and_log_level():
        from ipyparallel.engine.app import IPEngine
        app = IPEngine.instance()
        return type(app.kernel).__name__, app.log.getEffectiveLevel()

    engines = cluster.live_ids()
    assert cluster.client[engines].apply_sync(kernel_and_log_level) == \
        [("QuietKernel", logging.WARN)] * len(engines)
    pp.map(abs, range(20), batch=1).result()
    logs = [Path(launcher.output_file) for engine_set in cluster.cluster.engines.values()
            for launcher in handle_module._launchers(engine_set)]
    logs.append(Path(cluster.cluster.controller.output_file))
    texts = [log.read_text() for log in logs if log.exists()]  # a stopped engine's is gone
    assert len(texts) >= 2 and logs[-1].exists(), logs  # the controller's and an engine's
    assert not any("Handling apply_request" in text or "completed on" in text for text in texts)


def test_start_again_reuses_the_running_cluster(cluster):
    before = pp.status()
    again = pp.start()
    assert again["cluster_id"] == before["cluster_id"]
    assert [e["pid"] for e in again["engines"]] == [e["pid"] for e in before["engines"]]


def test_scale_adds_and_removes_engines(cluster):
    before = set(cluster.live_ids())
    grown = pp.scale(3)
    assert len(grown["engines"]) == 3
    (added,) = set(cluster.live_ids()) - before
    # cloudpickle is on the new engine too: it can send back a function it made
    made = cluster.client[added].apply_sync(lambda: (lambda y: y + 1))
    assert made(1) == 2
    run = pp.map(lambda x: x, range(30))
    run.wait(30)
    assert run.result()["status"].eq("ok").all()
    shrunk = pp.scale(2)
    assert len(shrunk["engines"]) == 2
    assert wait_until(lambda: len(cluster.live_ids()) == 2, 10)


def test_connect_uses_a_cluster_started_elsewhere_and_leaves_it_running(tmp_path):
    foreign = ipp.Cluster(n=1, cluster_id="pp-test-foreign", delay=0, log_level=40)
    foreign.start_cluster_sync()
    try:
        foreign.connect_client_sync().wait_for_engines(1, timeout=60)
        connection_file = f"{foreign.profile_dir}/security/ipcontroller-pp-test-foreign-client.json"
        result = run_script(f"""
            import json, pp_notebook as pp
            pp.connect(cluster_id="pp-test-foreign")
            status = pp.status()
            run = pp.map(lambda x: x * 3, range(5))
            run.wait(60)
            values = [r.value for r in run.records]
            pp.connect(connection_file={connection_file!r})
            by_file = pp.map(lambda x: x + 1, range(3))
            by_file.wait(60)
            pp.stop()
            print(json.dumps({{"status": status, "values": values,
                              "by_file": [r.value for r in by_file.records]}}))
        """)
        assert result["values"] == [0, 3, 6, 9, 12]
        assert result["by_file"] == [1, 2, 3]
        assert result["status"]["local"] is False
        assert result["status"]["cluster_id"] == "pp-test-foreign"
        assert len(result["status"]["engines"]) == 1
        # pp.stop() only disconnected: the cluster started elsewhere still answers, and its
        # engine keeps no function of the runs (told before the disconnect)
        client = foreign.connect_client_sync()
        assert client[:].apply_sync(abs, -7) == [7]  # a builtin: no pickler needed
        assert client[:].apply_sync(leftovers)[0]["runs"] == []
        client.close()
    finally:
        foreign.stop_cluster_sync()
        remove_files(cluster_files(foreign.profile_dir, "pp-test-foreign"))  # ipyparallel
        # leaves its engine-state file: the test's cluster leaves nothing in the profile


def test_connecting_to_a_missing_cluster_says_how_to_start_one():
    with pytest.raises(pp.ClusterError, match="no cluster reachable.*ipcluster start"):
        pp.connect(cluster_id="no-such-cluster", timeout=2)


def test_a_controller_that_cannot_start_reports_its_log(monkeypatch):
    usual = handle_module.controller_args
    monkeypatch.setattr(handle_module, "controller_args", lambda n: [*usual(n), "--ip=999.1.1.1"])
    with pytest.raises(pp.ClusterError, match="did not start(.|\n)*controller log(.|\n)*999.1.1.1"):
        start_cluster(1)


def test_engines_and_controller_end_with_the_process_and_on_stop():
    pids = run_script("""
        import json, pp_notebook as pp
        from pp_notebook import cluster
        pp.start(2)
        handle = cluster.current()
        engines = [e["pid"] for e in pp.status()["engines"]]
        controller = handle.controller_pid
        print(json.dumps({"engines": engines, "controller": controller}))
    """)  # the interpreter exits without calling stop()
    everything = pids["engines"] + [pids["controller"]]
    assert wait_until(lambda: not any(pid_alive(p) for p in everything), 15), everything

    stopped = run_script("""
        import json, os, pp_notebook as pp
        from pp_notebook import cluster
        pp.start(1)
        pids = [e["pid"] for e in pp.status()["engines"]]
        pids.append(cluster.current().controller_pid)
        pp.stop()
        print(json.dumps({"pids": pids, "status": pp.status()}))
    """)
    assert stopped["status"]["running"] is False
    assert wait_until(lambda: not any(pid_alive(p) for p in stopped["pids"]), 15)



_START_AND_LIST = """
    import json, os, signal, pp_notebook as pp
    from pathlib import Path
    from pp_notebook import cluster
    pp.start(1)
    pp.map(abs, range(3)).result()
    handle = cluster.current()
    facts = {"cluster_id": handle.cluster_id, "pids": [e["pid"] for e in pp.status()["engines"]]
             + [handle.controller_pid]}
    def files():
        profile = Path(handle.profile_dir)
        return sorted(p.name for p in profile.glob("*/*") if handle.cluster_id in p.name)
    facts["before"] = files()
"""


def test_a_killed_kernel_and_a_stop_leave_no_file_of_their_cluster_in_the_profile(tmp_path):
    """A cluster's connection files, cluster file and logs (security/ and log/ of the profile)
    go with it: after its kernel is SIGKILL'd (the reaper removes them) and after pp.stop(),
    which also prunes what earlier clusters of this toolkit whose kernels are gone left. The
    user's own clusters, ours whose kernel lives and other hosts' keep theirs. The scripts get
    a profile of their own (IPYTHONDIR), so no other cluster's files are in play."""
    profile = tmp_path / "ipython" / "profile_default"
    env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython")}

    def files_of(cluster_id):
        return sorted(p.name for p in profile.glob("*/*") if cluster_id in p.name)

    killed = run_script(_START_AND_LIST + """
    print(json.dumps(facts), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """, env=env, returncode=-signal.SIGKILL)
    cluster_id = killed["cluster_id"]
    assert cluster_id.startswith(CLUSTER_ID_PREFIX)
    assert {f"ipcontroller-{cluster_id}-client.json", f"ipcontroller-{cluster_id}-engine.json",
            f"cluster-{cluster_id}.json"} <= set(killed["before"]), killed["before"]
    assert any(name.startswith(f"ipengine-{cluster_id}") for name in killed["before"])
    assert wait_until(lambda: not any(pid_alive(p) for p in killed["pids"]), 20)
    assert wait_until(lambda: not files_of(cluster_id), 20), files_of(cluster_id)

    host = socket.gethostname()
    stale = f"{CLUSTER_ID_PREFIX}{host}-{_dead_pid()}-abcdef"  # ours, its kernel gone
    alive_ours = f"{CLUSTER_ID_PREFIX}{host}-{os.getpid()}-123456"
    elsewhere = f"{CLUSTER_ID_PREFIX}other-host-{_dead_pid()}-abcdef"  # a shared home folder
    users = "1796050170-abcd"  # ipyparallel's own style of id: the user's cluster
    planted = {cluster: [profile / "security" / f"ipcontroller-{cluster}-client.json",
                         profile / "log" / f"engines{cluster}.json",
                         profile / "log" / f"ipengine-{cluster}-1796050170-0.log"]
               for cluster in (stale, alive_ours, elsewhere, users)}
    for path in (p for paths in planted.values() for p in paths):
        path.write_text("{}")
    stopped = run_script(_START_AND_LIST + """
    pp.stop()
    facts["after"] = files()
    print(json.dumps(facts), flush=True)
    """, env=env)
    assert f"ipcontroller-{stopped['cluster_id']}-client.json" in stopped["before"]
    assert stopped["after"] == []
    assert not files_of(stopped["cluster_id"])
    assert not files_of(stale)
    assert all(path.exists() for path in planted[alive_ours] + planted[elsewhere]
               + planted[users])


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


# ipyparallel's LocalProcessLauncher.get_output checks os.path.isfile(log), then removes it:
# this makes the gap 0.2 s, so two removers at once collide every time (not 1 stop in 9).
_SLOW_ISFILE = """
import os, time

class Proxy:  # a module with some attributes replaced
    def __init__(self, target, **replaced):
        self._target = target
        self.__dict__.update(replaced)

    def __getattr__(self, name):
        return getattr(self._target, name)

def slow_isfile(path):
    found = os.path.isfile(path)
    if found and path.endswith(".log"):
        time.sleep(0.2)
    return found

SLOW_OS = Proxy(os, path=Proxy(os.path, isfile=slow_isfile))
"""


def test_stopping_never_races_ipyparallel_over_a_log_file(monkeypatch, capfd, caplog,
                                                          tmp_path):
    """ipyparallel removes a process's log file twice: when the cluster is stopped, and when
    the launcher hears of the exit, on the loop it was started on. Started from a notebook
    cell (a loop runs) and stopped where none runs (the kernel's exit, a run's thread), the two
    ran at once on two threads and one printed "Failed to remove …/ipcontroller-….log".
    The clusters get a profile of their own: in the shared one, other processes' clean-ups
    removed these logs mid-stop too (1 stop in 2 failed; never in its own profile)."""
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    slow = {}
    exec(_SLOW_ISFILE, slow)
    monkeypatch.setattr(launcher_module, "os", slow["SLOW_OS"])

    async def in_a_cell():  # a notebook cell: the kernel's event loop is running
        return start_cluster(1)

    async def stop_in_a_cell(handle):
        handle.shutdown()

    for _ in range(2):
        asyncio.run(in_a_cell()).shutdown()  # stopped where no event loop runs
    handle = start_cluster(1)  # and the other way round: started without one,
    stopper = threading.Thread(target=lambda: asyncio.run(stop_in_a_cell(handle)))
    stopper.start()  # stopped from a thread with one
    stopper.join(60)
    out, err = capfd.readouterr()
    assert "Failed to remove" not in out + err + caplog.text

    # the interpreter's exit stops a cluster still running: that too without the message
    script = _SLOW_ISFILE + textwrap.dedent("""
        from ipyparallel.cluster import launcher
        launcher.os = SLOW_OS
        import asyncio, pp_notebook as pp
        async def cell():
            pp.start(1)
        asyncio.run(cell())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Failed to remove" not in done.stdout + done.stderr, done.stdout + done.stderr
