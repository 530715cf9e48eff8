"""The launcher table: names and options checked before anything starts, options mapped onto
ipyparallel's launcher traits, one engine per engine set."""

import pytest
from IPython.core.error import UsageError

import pp_notebook as pp
from pp_notebook.cluster.handle import _last_error, controller_args
from pp_notebook.cluster.launchers import ENGINE_CMD, LAUNCHERS, LOCAL_ENGINE_CMD, launcher_for

from helpers import ipython_shell


def test_an_unknown_launcher_is_refused_with_the_ones_there_are():
    with pytest.raises(ValueError, match="unknown launcher 'pbs': choose one of local, slurm, "
                                         "mpi, ssh"):
        launcher_for("pbs", {})


def test_an_option_the_launcher_does_not_take_is_refused_with_those_it_takes():
    with pytest.raises(ValueError, match="'slurm' takes no option 'hosts'; it takes: partition, "
                                         "time, account, qos"):
        launcher_for("slurm", {"hosts": ["n1"]})
    with pytest.raises(ValueError, match="'local' takes no option 'partition'; it takes: no "
                                         "options"):
        launcher_for("local", {"partition": "debug"})
    with pytest.raises(ValueError, match="'ssh' needs hosts"):
        launcher_for("ssh", {})


def test_pp_start_refuses_a_bad_launcher_or_option_before_starting_anything():
    previous = pp.cluster.swap(None)
    try:
        with pytest.raises(ValueError, match="unknown launcher 'pbs'"):
            pp.start(1, launcher="pbs")
        with pytest.raises(ValueError, match="'slurm' takes no option 'queue'"):
            pp.start(1, launcher="slurm", queue="debug")
        assert pp.cluster.current_or_none() is None
    finally:
        pp.cluster.swap(previous)


def test_pp_start_magic_lists_the_launchers_and_keeps_launcher_options_to_start():
    with ipython_shell() as ip:
        with pytest.raises(UsageError, match="invalid choice: 'pbs'.*'local', 'slurm', 'mpi', "
                                             "'ssh'"):
            ip.run_line_magic("pp", "start 2 --launcher pbs")
        with pytest.raises(UsageError, match="--partition go with `%pp start`"):
            ip.run_line_magic("pp", "scale 2 --partition debug")


def test_slurm_options_become_the_launchers_traits_and_its_script_goes_in_the_folder(tmp_path):
    kwargs = LAUNCHERS["slurm"].engine_set_kwargs(
        {"partition": "debug", "time": "10", "account": "lab"}, 0, str(tmp_path / "jobs"), 60)
    assert kwargs == {"engine_cmd": ENGINE_CMD, "queue": "debug", "timelimit": "10",
                      "account": "lab",
                      "batch_file_name": str(tmp_path / "jobs" / "engine-0.sbatch")}
    assert (tmp_path / "jobs").is_dir()


def test_ssh_engines_take_the_hosts_in_turn_one_engine_each():
    ssh = LAUNCHERS["ssh"]
    sets = [ssh.engine_set_kwargs({"hosts": "n1,n2"}, i, "", 60)["engines"] for i in range(3)]
    assert sets == [{"n1": 1}, {"n2": 1}, {"n1": 1}]


def test_local_engines_wait_for_the_controllers_connection_file_they_start_beside():
    assert LAUNCHERS["local"].engine_set_kwargs({}, 0, "", 45.0) == {
        "engine_cmd": LOCAL_ENGINE_CMD,
        "engine_args": ["--IPEngine.wait_for_url_file=45.0", "--IPEngine.enable_nanny=False"]}


@pytest.mark.parametrize("engines, period", [(1, 50), (2, 50), (16, 160), (64, 500),
                                             (1000, 500)])
def test_the_heartbeat_quickens_for_small_clusters_and_a_silent_host_is_dead_in_5_s(
        engines, period):
    args = controller_args(engines)
    assert f"--HeartMonitor.period={period}" in args and "--nodb" in args
    misses = next(int(a.split("=")[1]) for a in args if "max_heartmonitor_misses" in a)
    assert abs(misses * period - 5000) <= period / 2


def test_an_engine_given_up_is_explained_by_its_last_error_never_by_a_routine_warning():
    """Local engines log warnings only: the last line of one that never registered is often
    "Not using CurveZMQ security", which says nothing of why it stopped."""
    log = ("2026-12-01 00:56:01.461 [QuickEngine] WARNING | Not using CurveZMQ security\n"
           "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
           "OSError: [Errno 98] Address already in use\n"
           "2026-12-01 00:56:02.001 [QuickEngine] WARNING | Not using CurveZMQ security\n")
    assert _last_error(log) == "OSError: [Errno 98] Address already in use"
    assert _last_error("2026 [QuickEngine] Registering with controller at tcp://h:1\n"
                       "2026 [QuickEngine] WARNING | Not using CurveZMQ security\n") \
        == "2026 [QuickEngine] Registering with controller at tcp://h:1"
    assert _last_error("2026 [QuickEngine] WARNING | Not using CurveZMQ security\n") == ""
