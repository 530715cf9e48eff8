"""The launchers a cluster starts its engines with: each name's ipyparallel launcher, the
options it takes and the launcher trait each option sets.

Every launcher starts engine sets of one engine, so that one engine can be added, retired or
replaced alone: with a scheduler that is one job per engine. The table is checked before
anything starts, and an unknown launcher or option is refused with what exists.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ipyparallel.cluster.launcher import LauncherError, SlurmEngineSetLauncher

ENGINE_CMD = [sys.executable, "-m", "ipyparallel.engine"]
"""This interpreter, on every host: a site shares it (and this package) between its nodes."""
LOCAL_ENGINE_CMD = [sys.executable, "-m", "pp_notebook.engine_app"]
"""ipyparallel's engine, quicker to see its connection file (pp_notebook/engine_app.py)."""


class SlurmEngines(SlurmEngineSetLauncher):
    """ipyparallel's Slurm engine set, keeping what `sbatch` or `scancel` said when they
    fail (ipyparallel lets their stderr go to the kernel's, and says only "exit status 1")."""

    def _run_command(self, command: list[str], **kwargs: Any) -> str:
        try:
            return super()._run_command(command, stderr=subprocess.PIPE, **kwargs)
        except subprocess.CalledProcessError as exc:
            said = (exc.stderr or b"").decode("utf8", "replace").strip()
            raise LauncherError(f"`{command[0]}` failed: {said or exc}") from None


def job_state(job: str) -> str:
    """What Slurm says of `job`: its state and reason (`PENDING (Resources)`), or why it
    cannot tell."""
    try:
        said = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T (%r)"], capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"squeue failed: {exc}"
    return (said.stdout.strip() or said.stderr.strip() or "no longer in the queue")


class Option(NamedTuple):
    """A launcher option: the launcher trait it sets, and its help."""

    trait: str
    help: str


@dataclass(frozen=True)
class Launcher:
    """One way to start engines: ipyparallel's launcher (name or class), whether it submits
    scheduler jobs (grown by queue depth, not by local CPU), and its options by our name."""

    name: str
    ipp_class: str | type
    scheduler: bool = False
    local: bool = False
    options: Mapping[str, Option] = field(default_factory=dict)
    required: tuple[str, ...] = ()

    def engine_set_kwargs(self, options: Mapping[str, Any], index: int, folder: str,
                          file_wait: float) -> dict[str, Any]:
        """The launcher traits of the `index`-th engine set (of one engine) for `options`;
        a scheduler's batch script is written in `folder` (ipyparallel would write it in the
        current directory). A local engine, launched beside the controller, waits up to
        `file_wait` seconds for its connection file."""
        # A local engine needs no nanny (a process each, 0.22 s of its start): this process
        # signals it and sees it end itself (KernelCluster.interrupt_engine, refresh).
        kwargs: dict[str, Any] = {"engine_cmd": list(LOCAL_ENGINE_CMD), "engine_args": [
            f"--IPEngine.wait_for_url_file={file_wait}", "--IPEngine.enable_nanny=False"]} \
            if self.local else {"engine_cmd": list(ENGINE_CMD)}
        if self.scheduler:  # an absolute name: ipyparallel joins it to its work_dir, "."
            os.makedirs(folder, exist_ok=True)
            kwargs["batch_file_name"] = os.path.join(folder, f"engine-{index}.sbatch")
        for name, value in options.items():
            kwargs[self.options[name].trait] = value
        if isinstance(kwargs.get("mpi_args"), str):
            kwargs["mpi_args"] = shlex.split(kwargs["mpi_args"])
        if self.name == "ssh":  # one engine per set: the hosts take turns
            hosts = kwargs.pop("engines")
            hosts = hosts.split(",") if isinstance(hosts, str) else list(hosts)
            kwargs["engines"] = {hosts[index % len(hosts)]: 1}
            kwargs["remote_python"] = sys.executable
        return kwargs


LAUNCHERS: dict[str, Launcher] = {launcher.name: launcher for launcher in (
    Launcher("local", "local", local=True),
    Launcher("slurm", SlurmEngines, scheduler=True, options={
        "partition": Option("queue", "slurm: the partition of the engines' jobs"),
        "time": Option("timelimit", "slurm: each engine job's time limit, e.g. 2:00:00"),
        "account": Option("account", "slurm: the account the jobs are charged to"),
        "qos": Option("qos", "slurm: the jobs' quality of service")}),
    Launcher("mpi", "mpi", options={
        "mpi_args": Option("mpi_args", "mpi: more mpiexec arguments, e.g. '--host n1'")}),
    Launcher("ssh", "ssh", options={
        "hosts": Option("engines", "ssh: the hosts engines start on, in turn: n1,n2")},
        required=("hosts",)),
)}
OPTIONS: dict[str, Option] = {name: option for launcher in LAUNCHERS.values()
                              for name, option in launcher.options.items()}
"""Every launcher's options (`%pp start` has an argument for each)."""


def launcher_for(name: str, options: Mapping[str, Any]) -> Launcher:
    """The launcher called `name`, once `options` are all ones it takes (and it has those it
    needs); otherwise a ValueError listing what exists."""
    launcher = LAUNCHERS.get(name)
    if launcher is None:
        raise ValueError(f"unknown launcher {name!r}: choose one of {', '.join(LAUNCHERS)}")
    unknown = sorted(set(options) - set(launcher.options))
    if unknown:
        takes = ", ".join(launcher.options) or "no options"
        raise ValueError(f"launcher {name!r} takes no option {', '.join(map(repr, unknown))}; "
                         f"it takes: {takes}")
    missing = [option for option in launcher.required if not options.get(option)]
    if missing:
        raise ValueError(f"launcher {name!r} needs {', '.join(missing)}")
    return launcher
