# reinlite: two commands do all the set-up on a fresh clone.
#   make demo   the main job on the embedded defaults (creates .venv/ and installs first)
#   make test   the unit tests and the notebook checks (creates .venv/ and installs first)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export MPLBACKEND ?= Agg
# nbval's kernels and pytest's workers share two cores: keep each one at one thread
PYTEST_WORKERS ?= 2

.PHONY: setup demo test test-unit test-notebooks lab assignments bench clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m reinlite.cli demo

test: test-unit test-notebooks

test-unit: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) tests

test-notebooks: $(STAMP)
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
	  REINLITE_FAST=1 $(PY) -m pytest -q -n $(PYTEST_WORKERS) --nbval-lax --nbval-current-env \
	    --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider notebooks/*.ipynb; \
	else echo "no notebooks yet"; fi

lab: $(STAMP)
	$(PY) -m pip install --quiet -e '.[lab]'
	$(VENV)/bin/jupyter lab notebooks/

assignments: $(STAMP)
	$(PY) -m pip install --quiet -e '.[assignments]'
	$(MAKE) -C notebooks/assignments build

bench: $(STAMP)
	$(PY) -m reinlite.cli costs

clean-venv:
	rm -rf $(VENV)
