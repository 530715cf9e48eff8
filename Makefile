# Two commands for a fresh machine: `make lab` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Two installs into the one venv, each with its stamp: the lab set (JupyterLab and what the
# notebooks import) and the full set (that plus the test and bench extras), which is a superset.
LAB_STAMP := $(VENV)/.lab-stamp
FULL_STAMP := $(VENV)/.full-stamp
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# The page `make lab` opens, and the URL it prints: the quickstart itself, not the Launcher.
LAB_URL := /lab/tree/notebooks/quickstart.ipynb

.PHONY: lab lint test test-fast test-shuffled demo bench venv system clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(LAB_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[lab]"
	touch $(LAB_STAMP)

# The full install covers the lab set too, so `make lab` after it installs nothing.
$(FULL_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[lab,test,bench]"
	touch $(FULL_STAMP) $(LAB_STAMP)

venv: $(FULL_STAMP)  ## everything: the lab set, the test and bench extras

# LabApp.default_url (not ServerApp's, which jupyterlab overrides) is the path of the printed
# URL and of the page a browser is sent to; the server's root stays this folder.
lab: $(LAB_STAMP)  ## open JupyterLab on the quickstart notebook
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root,) --LabApp.default_url=$(LAB_URL)

# Debian packages the tests need: chromium (tests/browser drives it through playwright),
# libfaketime (an engine with a skewed clock in tests/cluster/test_multihost.py), tcpdump (the
# encryption test captures the hosts' bridge), slurm-wlm and munge (a one-node Slurm for the
# scheduler tests) and openmpi-bin (the MPI launcher test).
SYSTEM_PACKAGES := chromium libfaketime tcpdump slurm-wlm munge openmpi-bin

system:  ## install the Debian packages above when one is missing
	dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update && $(SUDO) apt-get install -y $(SYSTEM_PACKAGES); }

lint: venv  ## ruff and mypy, clean before any test runs
	$(VENV)/bin/ruff check pp_notebook tests benchmarks notebooks/run_notebook.py
	$(VENV)/bin/mypy

test: venv system lint  ## every tier: unit, cluster, faults, browser (their times at the end)
	$(PY) -m pytest

test-fast: venv lint  ## the unit tier only: no cluster, kernel or browser (under 30 s)
	$(PY) -m pytest tests/unit

test-shuffled: venv system  ## the whole suite once in a random order (pytest-randomly)
	$(PY) -m pytest -p randomly

demo: venv  ## run the quickstart headless and print its summary
	$(PY) notebooks/run_notebook.py notebooks/quickstart.ipynb

bench: venv  ## pp_notebook beside its peers, one table (benchmarks/README.md)
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_shared.py
	$(PY) benchmarks/bench_memory.py --sizes 1e4,1e5,1e6
	$(PY) benchmarks/bench_scale.py
	$(PY) benchmarks/bench_first_cell.py
	$(PY) benchmarks/bench_dashboard.py

clean:
	rm -rf $(VENV) .pytest_cache benchmarks/results
