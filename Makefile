# lab: reproduce five Transformer-interpretability papers from notebooks.
#   make test       unit tests, then every notebook executed under the smoke profile
#   make reproduce  every notebook under the default profile -> results/, figures/, notebooks/_executed/
#                   (other profiles: results/<profile>/, figures/<profile>/, notebooks/_executed/<profile>/)
#   make lab        JupyterLab on notebooks/
# Override any variable on the command line, e.g. `make reproduce LAB_DATA_DIR=/data/lab VENV=~/venvs/lab`.

VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

# Datasets are read from LAB_DATA_DIR: ../shared/data when this checkout sits next to it, else data/.
LAB_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(abspath data))
export LAB_DATA_DIR
# Nothing is ever downloaded from the Hugging Face hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: install test unit reproduce paper lab bench data clean clean-cache

install: $(INSTALLED)

# The venv is created on first use; torch==2.13.0 resolves to a CPU build from local disk here.
$(INSTALLED): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -e '.[dev]'
	$(PYTHON) -m ipykernel install --sys-prefix --name lab --display-name "Python (lab)"
	touch $@

test: unit
	$(PYTHON) -m lab reproduce --profile smoke

unit: $(INSTALLED)
	$(PYTHON) -m pytest -q -m "not notebooks"

reproduce: $(INSTALLED)
	$(PYTHON) -m lab reproduce --profile default --if-changed

paper: $(INSTALLED)
	$(PYTHON) -m lab reproduce --profile paper --if-changed

# JupyterLab refuses to start as root without --allow-root. No LAB_PROFILE: each notebook's `profile` decides.
lab: $(INSTALLED)
	env -u LAB_PROFILE $(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

bench: $(INSTALLED)
	$(PYTHON) -m lab bench

data: $(INSTALLED)
	$(PYTHON) -m lab data

# Executed notebooks and generated outputs (committed notebooks are never touched).
clean:
	rm -rf notebooks/_executed .pytest_cache
	find figures results -mindepth 1 ! -name .gitkeep -exec rm -rf {} +

# Trained models and cached statistics (LAB_CACHE_DIR, default ~/.cache/lab).
clean-cache: $(INSTALLED)
	$(PYTHON) -c "import shutil, lab.config as c; d = c.cache_dir(); shutil.rmtree(d); print('removed', d)"
