"""A real one-node Slurm for tests: munged, slurmctld and slurmd from a temporary slurm.conf
(own ports, state and spool folders, munge socket and key), stopped with nothing left.

Every process it starts carries its SLURM_CONF in its environment (the daemons, the job
steps slurmd forks and the engines the jobs run), so `stop` finds and ends exactly these.
"""

import os
import shutil
import socket
import subprocess
from pathlib import Path

import psutil

from helpers import wait_until

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")
CPUS = 2

CONF = """\
ClusterName=pptest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
PartitionName=spare Nodes={host} MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
PartitionName=whole Nodes={host} MaxTime=INFINITE State=UP OverSubscribe=EXCLUSIVE
"""
"""`debug` runs up to 8 engine jobs at once; `whole` gives each job the whole node, so a
second one waits (reason Resources); `spare` is a partition a test may close."""


def unavailable() -> str | None:
    """Why a Slurm cannot run here, or None."""
    if os.geteuid() != 0:
        return "a private Slurm runs its daemons as root (SlurmUser=root); not root here"
    missing = [program for program in PROGRAMS if shutil.which(program) is None]
    if missing:
        return f"Slurm or munge is not installed (missing {', '.join(missing)}): make system"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class OneNodeSlurm:
    """munged + slurmctld + slurmd under `root`; `env` is what Slurm's commands need."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._daemons: list[subprocess.Popen] = []

    def start(self) -> None:
        munge = self.root / "munge"
        for folder in (munge, self.root / "state", self.root / "spool"):
            folder.mkdir(parents=True)
        munge.chmod(0o711)  # munged wants its socket's folder searchable, not writable
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.conf.write_text(CONF.format(host=socket.gethostname(), root=self.root, cpus=CPUS,
                                         ctld_port=_free_port(), d_port=_free_port()))
        self._daemon("munged", "-F", "--force", f"--socket={munge}/socket",
                     f"--key-file={key}", f"--pid-file={munge}/pid",
                     f"--log-file={munge}/log", f"--seed-file={munge}/seed")
        if not wait_until(lambda: (munge / "socket").exists(), 10):
            raise RuntimeError(f"munged did not start: {self.logs()}")
        self._daemon("slurmctld", "-D")
        self._daemon("slurmd", "-D")
        if not wait_until(lambda: self.command("sinfo", "-h", "-p", "debug", "-o", "%t")
                          .strip() == "idle", 30, interval=0.2):
            raise RuntimeError(f"the Slurm node did not become idle: {self.logs()}")

    def _daemon(self, *argv: str) -> None:
        log = open(self.root / f"{argv[0]}.out", "wb")
        self._daemons.append(subprocess.Popen(argv, env=self.env, stdout=log,
                                              stderr=subprocess.STDOUT,
                                              start_new_session=True))
        log.close()

    def command(self, *argv: str) -> str:
        """Run a Slurm command against this Slurm; its output."""
        return subprocess.run(argv, env=self.env, capture_output=True, text=True,
                              timeout=30).stdout

    def jobs(self) -> dict[str, str]:
        """Job id -> state of every job Slurm still lists as pending or running."""
        lines = self.command("squeue", "-h", "-o", "%i %T").split("\n")
        return dict(line.split() for line in lines if line.strip())

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text()[-2000:]}"
                         for path in sorted(self.root.glob("*.out")) + sorted(
                             self.root.glob("*.log")))

    def stop(self) -> list[str]:
        """Cancel every job, give the other processes of this Slurm (a stopped cluster's
        reaper still cancelling) time to end, stop the daemons, then end any process still
        carrying this SLURM_CONF; returns what had to be ended that way (should be nothing)."""
        jobs = list(self.jobs()) if self._daemons else []
        if jobs:
            self.command("scancel", *jobs)
            wait_until(lambda: not self.jobs(), 20, interval=0.2)
        daemons = {daemon.pid for daemon in self._daemons}
        wait_until(lambda: not [p for p in self._processes() if p.pid not in daemons], 10,
                   interval=0.1)
        for daemon in reversed(self._daemons):
            daemon.terminate()
        for daemon in self._daemons:
            try:
                daemon.wait(15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        return self._end_stragglers()

    def _end_stragglers(self) -> list[str]:
        """Processes with this SLURM_CONF (job steps, engines) that outlived the daemons:
        ended now, by pid and start time; what they were."""
        found, described = [], []
        for process in self._processes():
            try:
                described.append(f"{process.pid} {' '.join(process.cmdline())}")
                found.append(process)
            except psutil.Error:
                continue
        for process in found:
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(found, timeout=5)
        return described

    def _processes(self) -> list[psutil.Process]:
        """Every process but this one whose environment holds this SLURM_CONF."""
        found = []
        for process in psutil.process_iter():
            try:
                if process.pid != os.getpid() and \
                        process.environ().get("SLURM_CONF") == str(self.conf):
                    found.append(process)
            except psutil.Error:
                continue
        return found
