"""Ends a local cluster's processes when the process that started them ends, even by SIGKILL.

A kernel killed outright runs no atexit hook, and its controller and engines would live on.
So the kernel starts this small watcher in its own session and writes it the pid of each
process it launches; when the pipe closes (the kernel stopped the cluster, exited or was
killed), the watcher cancels the scheduler jobs it was told of (engines on other nodes),
ends those processes and their children, removes the files it was told of (the cluster's
shared values in /dev/shm, its connection files and logs), then exits.

The pipe carries one line per thing to clean up, its kind first: `<pid> <create time>` (a
process to end), `scancel <job>` (a scheduler job to cancel) or `remove <glob>` (files to
remove once the processes have ended).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import IO

import psutil

from .files import remove_files

TERMINATE_GRACE_S = 3.0
SCANCEL_TIMEOUT_S = 60.0
"""scancel retries while slurmctld does not answer: the watcher still ends the processes."""


class Reaper:
    """The kernel's side: a pipe to the watcher process."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "pp_notebook.cluster.reaper"], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        assert self._process.stdin is not None  # stdin=PIPE
        self._pipe: IO[bytes] = self._process.stdin

    def watch(self, pid: int) -> None:
        """End `pid` (and its children) when this process ends or calls `close`."""
        try:
            created = psutil.Process(pid).create_time()
            self._pipe.write(f"{pid} {created}\n".encode())
            self._pipe.flush()
        except (psutil.Error, OSError):  # already gone, or the watcher is
            pass

    def remove(self, pattern: str) -> None:
        """Remove the files matching the glob `pattern` once the processes are ended."""
        self._send(f"remove {pattern}")

    def cancel(self, job: str) -> None:
        """Cancel the Slurm job `job` (`scancel`) when this process ends or calls `close`."""
        self._send(f"scancel {job}")

    def _send(self, line: str) -> None:
        try:
            self._pipe.write(f"{line}\n".encode())
            self._pipe.flush()
        except OSError:  # the watcher is gone
            pass

    def close(self) -> None:
        """Let the watcher end whatever is left of the cluster now."""
        try:
            self._pipe.close()
        except OSError:
            pass


def _reap(watched: list[tuple[int, float]]) -> None:
    """End each watched process, its children, and the rest of its process group: a child
    whose parent was killed first has been re-parented, but stays in the group."""
    roots = dict(watched)
    reused = set()  # a root pid that now names another process: leave that one alone
    for root, created in roots.items():
        try:
            if abs(psutil.Process(root).create_time() - created) >= 0.01:
                reused.add(root)
        except psutil.Error:
            pass
    processes = []
    for process in psutil.process_iter(["create_time"]):
        try:
            group = os.getpgid(process.pid)
        except OSError:
            continue
        root = process.pid if process.pid in roots else group
        if root in roots and root not in reused \
                and process.info["create_time"] >= roots[root] - 0.01:
            processes.append(process)
    for process in list(processes):
        try:
            processes += process.children(recursive=True)
        except psutil.Error:
            pass
    processes = list({p.pid: p for p in processes if p.pid != os.getpid()}.values())
    for process in processes:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(processes, timeout=TERMINATE_GRACE_S)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass


def cancel_jobs(jobs: list[str]) -> bool:
    """`scancel` the Slurm jobs within SCANCEL_TIMEOUT_S (it retries while slurmctld does
    not answer); False when it could not run or finish (no scancel here, no slurmctld). Jobs
    that ended already make it complain: it still cancels the others."""
    try:
        subprocess.run(["scancel", *jobs], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=SCANCEL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return True


def main() -> None:
    watched, patterns, jobs = [], [], []
    for line in sys.stdin:  # until EOF: the kernel closed the pipe or died
        first, rest = line.rstrip("\n").split(" ", 1)
        if first == "remove":
            patterns.append(rest)
        elif first == "scancel":
            jobs.append(rest)
        else:
            watched.append((int(first), float(rest)))
    if jobs:
        cancel_jobs(jobs)
    _reap(watched)
    remove_files(patterns)


if __name__ == "__main__":
    main()
