"""Engines through a real one-node Slurm: `%pp start N --launcher slurm`, one job per engine,
a cancelled job's tasks requeued, adaptive jobs, jobs never granted, and no job left behind
by `pp.stop()` or a killed kernel."""

import os
import signal
import socket
import sys
import time

import cloudpickle
import psutil
import pytest

import pp_notebook as pp
from pp_notebook.magic import cluster_status_text

from helpers import execute, ipython_shell, text_of, wait_until, watched
from one_node_slurm import OneNodeSlurm, unavailable


def _controller_ip() -> str | None:
    """An interface the engines reach the controller on: not loopback where there is one,
    so the controller listens as on a real site (CurveZMQ on)."""
    for name, entries in psutil.net_if_addrs().items():
        if any(e.family == socket.AF_INET and not e.address.startswith("127.")
               for e in entries):
            return name
    return None


IFACE = _controller_ip()


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node Slurm for this module, its SLURM_CONF set meanwhile; stopped at the end
    with no daemon, job step or engine left."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    one = OneNodeSlurm(tmp_path_factory.mktemp("slurm"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", str(one.conf))
        try:
            one.start()
            yield one
        finally:
            stragglers = one.stop()
    assert not stragglers, f"left running after the Slurm stopped: {stragglers}"


@pytest.fixture
def slurm_cluster(slurm, own_cluster):
    """The test starts a Slurm cluster; at the end it is stopped and Slurm lists no job."""
    yield slurm
    pp.stop()
    assert wait_until(lambda: not slurm.jobs(), 20, interval=0.2), slurm.jobs()


def nap(x):
    time.sleep(0.2)
    return x


def job_of_engine(x):
    time.sleep(0.05)
    return os.environ.get("SLURM_JOB_ID")


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import this file


def running_jobs(slurm) -> set[str]:
    return {job for job, state in slurm.jobs().items() if state == "RUNNING"}


def test_a_parallel_cell_runs_on_engines_that_pp_start_submitted_as_slurm_jobs(slurm_cluster,
                                                                              capsys):
    slurm = slurm_cluster
    ip_option = f" --controller-ip {IFACE}" if IFACE else ""
    with ipython_shell() as ip:
        ip.run_line_magic("pp", f"start 2 --launcher slurm --time 10{ip_option}")
        status = pp.status()
        jobs = {engine["id"]: engine["job"] for engine in status["engines"]}
        assert status["launcher"] == "slurm" and len(jobs) == 2, status
        assert set(jobs.values()) == running_jobs(slurm)  # one running job per engine
        ip.user_ns["job_of_engine"] = job_of_engine
        assert ip.run_cell("%%parallel x in range(8) -o df\njob_of_engine(x)").success
        df = ip.user_ns["df"]
        assert (df["status"] == "ok").all(), df
        assert all(df["result"] == df["engine"].map(jobs))  # each ran inside its engine's job
        capsys.readouterr()
        ip.run_line_magic("pp", "status")
        printed = capsys.readouterr().out
        ip.run_line_magic("pp", "stop")
    assert all(f"on {socket.gethostname()}, job {job}" in printed for job in jobs.values()), \
        printed
    assert wait_until(lambda: not slurm.jobs(), 20, interval=0.2), slurm.jobs()


@pytest.mark.parametrize("ending", ["scancel", "time limit"])
def test_an_engines_job_ending_mid_run_requeues_its_tasks_and_loses_nothing(slurm_cluster,
                                                                           ending):
    slurm = slurm_cluster
    pp.start(2, launcher="slurm", controller_ip=IFACE)
    first = {engine["job"] for engine in pp.status()["engines"]}
    items = range(40 if ending == "scancel" else 400)  # time limits are enforced every 30 s
    run = pp.map(nap, items)
    assert wait_until(lambda: run.snapshot().completed >= 4, 30)
    victim = sorted(first)[0]
    if ending == "scancel":
        slurm.command("scancel", victim)
    else:  # its time limit is up now: slurmctld ends it at its next check
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        slurm.command("scontrol", "update", f"JobId={victim}", f"EndTime={now}")
    assert wait_until(lambda: victim not in running_jobs(slurm), 40, interval=0.2)
    assert not run.done  # the job ended mid-run
    df = run.result()
    assert run.failure is None, run.failure
    assert (df["status"] == "ok").all(), df[["status", "error"]]
    assert list(df["result"]) == list(items)
    assert wait_until(lambda: len(pp.status()["engines"]) == 2, 30), pp.status()
    now = {engine["job"] for engine in pp.status()["engines"]}
    assert victim not in now and len(now - first) == 1  # its replacement: a new job
    assert running_jobs(slurm) == now


def test_a_run_that_loses_its_last_engine_and_cannot_get_another_names_the_reason(
        slurm_cluster):
    slurm = slurm_cluster
    pp.start(1, launcher="slurm", partition="spare", controller_ip=IFACE)
    (job,) = slurm.jobs()
    run = pp.map(nap, range(40))
    assert wait_until(lambda: run.snapshot().completed >= 3, 30)
    slurm.command("scontrol", "update", "PartitionName=spare", "State=INACTIVE")
    try:
        slurm.command("scancel", job)
        df = run.result(timeout=60)
    finally:
        slurm.command("scontrol", "update", "PartitionName=spare", "State=UP")
    ok, lost = df[df["status"] == "ok"], df[df["status"] == "lost"]
    assert len(ok) >= 3 and len(ok) + len(lost) == 40, df["status"].value_counts()
    assert list(ok["result"]) == list(ok.index)  # what finished is kept
    assert lost["error"].str.contains("none could be started").all(), lost["error"].iloc[0]
    reason = "Required partition not available"  # what sbatch said
    assert lost["error"].str.contains(reason).all(), lost["error"].iloc[0]
    assert reason in pp.status()["not_granted"][-1]["reason"]


def test_auto_submits_jobs_while_work_waits_and_cancels_them_when_idle(slurm_cluster):
    slurm = slurm_cluster
    pp.start("auto", launcher="slurm", controller_ip=IFACE, min_engines=1, max_engines=3,
             idle_timeout=1.0)
    assert wait_until(lambda: len(pp.status()["engines"]) == 1, 30), pp.status()
    run = pp.map(nap, range(60))
    most = 0
    while not run.wait(0.2):
        most = max(most, len(running_jobs(slurm)))
    df = run.result()
    assert (df["status"] == "ok").all() and (df["attempts"] == 1).all()
    assert most == 3 and df["engine"].nunique() >= 2, most
    assert wait_until(lambda: len(slurm.jobs()) == 1, 30, interval=0.2), slurm.jobs()
    assert [e["job"] for e in pp.status()["engines"]] == list(slurm.jobs())


def test_a_job_left_pending_is_cancelled_after_the_deadline_and_shown_not_granted(
        slurm_cluster):
    slurm = slurm_cluster
    started = time.monotonic()
    status = pp.start(2, launcher="slurm", partition="whole", register_timeout=3,
                      controller_ip=IFACE)  # the node takes one job at a time
    assert time.monotonic() - started < 30  # the pending one was not waited for
    (refused,) = status["not_granted"]
    assert refused["job"] and "PENDING" in refused["reason"] and "cancelled" in refused["reason"]
    assert refused["job"] not in slurm.jobs() and len(status["engines"]) == 1
    run = pp.map(nap, range(6))
    rows = watched(run).widget.engines
    assert (run.result()["status"] == "ok").all()
    shown = [row for row in rows if row["state"] == "not granted"]
    assert shown and shown[0]["job"] == refused["job"], rows
    assert f"not granted: job {refused['job']}" in cluster_status_text(pp.status())


def test_a_killed_kernels_slurm_jobs_are_cancelled_by_the_reaper(slurm, kernel):
    km, kc = kernel
    code = ("%load_ext pp_notebook\n%pp start 1 --launcher slurm"
            + (f" --controller-ip {IFACE}" if IFACE else ""))
    reply, outputs = execute(kc, code, timeout=60)
    assert reply["status"] == "ok", text_of(outputs)
    assert wait_until(lambda: len(running_jobs(slurm)) == 1, 10), slurm.jobs()
    os.kill(km.provisioner.pid, signal.SIGKILL)
    assert wait_until(lambda: not slurm.jobs(), 30, interval=0.2), slurm.jobs()
