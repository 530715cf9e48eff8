"""The files ipyparallel leaves in the IPython profile for each cluster, and which are ours.

A cluster writes its connection files and cluster file (`security/`) and its processes' logs
and engine-state file (`log/`). ipyparallel removes most of them when the cluster stops
cleanly, but a killed kernel's cluster leaves them all, and the controller's engine-state file
(`log/engines<id>.json`) is never removed. The profile is shared with the user's own clusters,
so only ids that say they are this toolkit's are ever pruned:
`pp_notebook-<host>-<pid>-<random>`, where `pid` is the process that started the cluster on
`host`; a cluster whose starter is dead is over. Only this host's ids are pruned: a home
folder shared between machines holds other hosts' clusters, whose pids mean nothing here.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import socket

import psutil

CLUSTER_ID_PREFIX = "pp_notebook-"
_HOST = socket.gethostname()
_OUR_ID_HERE = re.compile(re.escape(f"{CLUSTER_ID_PREFIX}{_HOST}-") + r"(\d+)-[0-9a-f]{6}(?=[-.])")
"""An id of ours from this host within a file's name (followed by `-` or `.` in each)."""


def new_cluster_id() -> str:
    """An id for a cluster this process starts: recognisably ours, naming its owner."""
    return f"{CLUSTER_ID_PREFIX}{_HOST}-{os.getpid()}-{secrets.token_hex(3)}"


def cluster_files(profile_dir: str, cluster_id: str) -> list[str]:
    """Glob patterns of every file ipyparallel writes for cluster `cluster_id`."""
    security = os.path.join(profile_dir, "security")
    log = os.path.join(profile_dir, "log")
    return [os.path.join(security, f"ipcontroller-{cluster_id}-client.json"),
            os.path.join(security, f"ipcontroller-{cluster_id}-engine.json"),
            os.path.join(security, f"cluster-{cluster_id}.json"),
            os.path.join(log, f"ipcontroller-{cluster_id}-*.log"),
            os.path.join(log, f"ipengine-{cluster_id}-*.log"),
            os.path.join(log, f"engines{cluster_id}.json"),
            os.path.join(log, f"ipengine-{cluster_id}")]  # a scheduler's batch scripts


def remove_files(patterns: list[str]) -> None:
    """Remove the files and folders that match the glob `patterns` (those gone already are
    no matter)."""
    for path in (p for pattern in patterns for p in glob.glob(pattern)):
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except OSError:
            pass


def prune_dead(profile_dir: str) -> list[str]:
    """Remove the files of this toolkit's earlier clusters on this host whose starting
    process has ended; returns their ids. Other clusters' files (the user's own, other
    hosts') are never touched."""
    found: set[str] = set()
    for folder in ("security", "log"):
        try:
            names = os.listdir(os.path.join(profile_dir, folder))
        except OSError:
            continue
        found.update(match.group(0) for match in map(_OUR_ID_HERE.search, names)
                     if match is not None and not psutil.pid_exists(int(match.group(1))))
    for cluster_id in found:
        remove_files(cluster_files(profile_dir, cluster_id))
    return sorted(found)
