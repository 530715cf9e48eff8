# Two commands for a fresh machine: `make lab` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: lab test demo bench venv system clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,bench]"
	touch $(STAMP)

lab: venv  ## open JupyterLab on the quickstart notebook
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root,) notebooks/quickstart.ipynb

# Debian packages the tests need: chromium (tests/test_browser.py drives it through
# playwright) and libfaketime (an engine with a skewed clock in tests/test_multihost.py).
SYSTEM_PACKAGES := chromium libfaketime

system:  ## install the Debian packages above when one is missing
	dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update && $(SUDO) apt-get install -y $(SYSTEM_PACKAGES); }

test: venv system  ## the whole suite, on real local clusters
	$(PY) -m pytest

demo: venv  ## run the quickstart headless and print its summary
	$(PY) notebooks/run_notebook.py notebooks/quickstart.ipynb

bench: venv  ## pp_notebook beside its peers, one table (benchmarks/README.md)
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_dashboard.py

clean:
	rm -rf $(VENV) .pytest_cache benchmarks/results
