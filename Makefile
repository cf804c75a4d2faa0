# Two commands set everything up on a fresh machine:
#   make run    create .venv, install, fetch MNIST, run the notebooks in order into runs/ (and as HTML)
#   make test   the same set-up, then ruff (lint and format check), the unit tests, the browser test and pytest --nbval
# Every target is idempotent: a second call skips what is already done.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The torch CI and the measurements in assets/measurements/ use; override for another platform, e.g.
#   make run TORCH="torch torchvision"
TORCH  ?= torch==2.14.1 torchvision==0.29.1
RUNS   := runs
# make run FROM_02=1 samples in notebook 03 from the checkpoint notebook 02 just trained,
# instead of the shipped weights.
FROM_02 ?=

.PHONY: run test lint lab data venv clean-runs

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip show -q torch torchvision 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

data: $(VENV)/.installed
	@$(PY) -m ddpm_lib.data

# One line as each notebook starts and ends, a bar of its cells, HTML copies in runs/, and
# the kernel's log in runs/logs/ instead of the terminal (tools/run_notebooks.py says more).
run: data
	@$(PY) tools/run_notebooks.py --runs $(RUNS) $(if $(FROM_02),--from-02)

# One pytest for the unit tests and the notebooks, spread over the cores by pytest-xdist (a file,
# and so a notebook, stays on one worker); the notebooks, the longest files, are handed out first so
# that no worker starts one near the end. One torch thread per worker: several multi-threaded
# torch processes on the same cores spin-wait for each other (assets/measurements/BENCHMARKS.md).
test: data lint
	bash tests/install_browser.sh $(VENV)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n auto --dist loadfile notebooks tests --nbval -p no:cacheprovider --durations=15

# ruff's settings are in pyproject.toml; `ruff format .` and `ruff check --fix .` mend most of what this reports.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lab: data
	$(VENV)/bin/jupyter lab notebooks

clean-runs:
	rm -rf $(RUNS)
