# Two commands set everything up on a fresh machine:
#   make run    create .venv, install, fetch MNIST, run the notebooks in order into runs/
#   make test   the same set-up, then the unit tests, the browser test and pytest --nbval
# Every target is idempotent: a second call skips what is already done.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The torch CI and the README's numbers use; override for another platform, e.g.
#   make run TORCH="torch torchvision"
TORCH  ?= torch==2.14.1 torchvision==0.29.1
RUNS   := runs
# make run FROM_02=1 samples in notebook 03 from the checkpoint notebook 02 just trained,
# instead of the shipped weights.
FROM_02 ?=

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
	@$(PY) -m ddpm_lib.data

PAPERMILL := $(PY) -m papermill --cwd notebooks --no-progress-bar
run: data
	mkdir -p $(RUNS)
	$(PAPERMILL) notebooks/01_forward_noising.ipynb $(RUNS)/01_forward_noising.ipynb
	$(PAPERMILL) notebooks/02_training.ipynb $(RUNS)/02_training.ipynb -p out_dir ../$(RUNS)/02_training
	$(PAPERMILL) notebooks/03_reverse_sampling.ipynb $(RUNS)/03_reverse_sampling.ipynb \
	  $(if $(FROM_02),-p checkpoint ../$(RUNS)/02_training/checkpoint.pt)
	$(PAPERMILL) notebooks/04_guidance_and_fast_sampling.ipynb $(RUNS)/04_guidance_and_fast_sampling.ipynb
	@echo "Done. Executed notebooks: $(RUNS)/*.ipynb; training run (checkpoint, epoch grids, loss history): $(RUNS)/02_training/"

test: data
	bash tests/install_browser.sh $(VENV)
	$(PY) -m pytest tests
	$(PY) -m pytest --nbval notebooks -p no:cacheprovider

lab: data
	$(VENV)/bin/jupyter lab notebooks

clean-runs:
	rm -rf $(RUNS)
