"""Every demo notebook runs top to bottom, in an environment built only from binder/.

This is what Binder (repo2docker) does: install binder/requirements.txt, run binder/postBuild
from the repository's root, then open the notebooks. Each notebook ends with a cell of its own
checks, so a notebook that runs without error has also checked its results.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def binder_env(tmp_path_factory):
    """A fresh virtual environment made from binder/ files alone, as repo2docker would."""
    venv = tmp_path_factory.mktemp("binder") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
               VIRTUAL_ENV=str(venv))
    env.pop("PYTHONPATH", None)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + ["-r", str(REPO / "binder" / "requirements.txt")], check=True, env=env,
                   timeout=900)
    subprocess.run([str(REPO / "binder" / "postBuild")], check=True, cwd=REPO, env=env,
                   timeout=600)
    return venv, env


def test_the_binder_environment_imports_the_package_it_built(binder_env):
    venv, env = binder_env
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import pp_notebook, sys; print(pp_notebook.__file__)"],
                           capture_output=True, text=True, check=True, cwd="/", env=env)
    assert where.stdout.strip().startswith(str(venv))  # installed, not the source tree


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_each_notebook_runs_and_passes_its_own_checks(binder_env, notebook, tmp_path):
    venv, env = binder_env
    runner = REPO / "notebooks" / "run_notebook.py"
    env = dict(env, IPYTHONDIR=str(tmp_path / "ipython"))  # what a notebook's clusters leave
    # in their profile (the ipcluster it starts, say) goes with the test's folder
    done = subprocess.run([str(venv / "bin" / "python"), str(runner),
                           str(notebook)], capture_output=True, text=True, env=env, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    assert "every cell ran" in done.stdout
    assert "all checks passed" in done.stdout
