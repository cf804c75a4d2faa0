# Two commands set everything up on a fresh machine:
#   make run    create .venv, install, fetch MNIST, run the notebooks in order into runs/
#   make test   the same set-up, then the unit tests, the browser test and pytest --nbval
# Every target is idempotent: a second call skips what is already done.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The versions CI and the README numbers use; override for another platform, e.g.
#   make run TORCH="torch torchvision"
TORCH  ?= torch==2.14.1 torchvision==0.29.1
RUNS   := runs
NOTEBOOKS := 01_forward_noising 02_training 03_reverse_sampling

.PHONY: run test lab data venv clean-runs

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip show -q torch torchvision 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

data: $(VENV)/.installed
	$(PY) -c "from ddpm_lib.data import ensure_mnist; ensure_mnist()"

run: data
	mkdir -p $(RUNS)
	@for nb in $(NOTEBOOKS); do \
	  echo "== $$nb"; \
	  $(PY) -m papermill --cwd notebooks notebooks/$$nb.ipynb $(RUNS)/$$nb.ipynb -p out_dir ../$(RUNS)/02_training --progress-bar || exit 1; \
	done
	@echo "Done. Executed notebooks: $(RUNS)/*.ipynb; training run (checkpoint, epoch grids, loss history): $(RUNS)/02_training/"

test: data
	bash tests/install_browser.sh $(VENV)
	$(PY) -m pytest tests
	$(PY) -m pytest --nbval notebooks --sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

lab: data
	$(VENV)/bin/jupyter lab notebooks

clean-runs:
	rm -rf $(RUNS)
