"""Engines started by mpiexec (OpenMPI here), one engine set each, through `pp.start`."""

import importlib.util
import os
import re
import shutil
import sys
import time

import cloudpickle
import psutil
import pytest

import pp_notebook as pp

from helpers import running

MPI_LAUNCHER = re.compile(r"mpiexec|mpirun|orterun|prterun|orted|prted")


def parent_pid(x):
    time.sleep(0.05)
    return os.getppid()


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import this file


@pytest.fixture
def mpi(monkeypatch, own_cluster):
    if shutil.which("mpiexec") is None:
        pytest.skip("mpiexec is not installed (make system installs openmpi-bin)")
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("ipyparallel's MPI engines import mpi4py, which is not installed")
    # OpenMPI refuses root unless told twice (DESIGN.md)
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")


def test_mpiexec_starts_each_engine_and_a_map_runs_on_them(mpi):
    status = pp.start(2, launcher="mpi", mpi_args=["--oversubscribe"])
    assert status["launcher"] == "mpi" and len(status["engines"]) == 2, status
    df = pp.map(parent_pid, range(6)).result()
    assert (df["status"] == "ok").all(), df
    parents = [psutil.Process(pid) for pid in set(df["result"])]
    assert len(parents) == 2, parents  # one mpiexec per engine: an engine set of one
    assert all(MPI_LAUNCHER.search(parent.name()) for parent in parents), parents
    pp.stop()
    assert not any(running(parent) for parent in parents)
