# reinlite: two commands do all the set-up on a fresh clone.
#   make demo   the main job on the embedded defaults (creates .venv/ and installs first)
#   make test   the unit tests and the notebook checks (creates .venv/ and installs first)
#   make test-fast  the unit tier only (pytest -m "not slow"): under a minute; `make test` runs everything
#   make lab    JupyterLab on notebooks/ (figures inline; --allow-root when run as root)
#   make test-browser  the course in a real headless Chromium (installs Debian's chromium)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
LAB_STAMP := $(VENV)/.installed-lab
BROWSER_STAMP := $(VENV)/.installed-browser
# The environment JupyterLab's kernels run in: figures are drawn inline. `make lab`,
# `make test-notebooks` (nbval, which counts the figures each notebook draws) and
# `make test-browser` all use it, so the tests see what a student sees.
LAB_MPLBACKEND ?= module://matplotlib_inline.backend_inline
LAB_ENV = MPLBACKEND=$(LAB_MPLBACKEND)
# jupyter refuses to run as root (containers) without --allow-root
LAB_ROOT_FLAG = $(if $(filter 0,$(shell id -u)),--allow-root)
# How JupyterLab is started, by `make lab` and by the browser test (which appends its own
# --no-browser --ip --port --IdentityProvider.token); extra flags: make lab LAB_ARGS='--port 8899'
LAB_CMD = env $(LAB_ENV) $(PY) -m jupyterlab $(LAB_ROOT_FLAG) notebooks/
LAB_ARGS ?=
BROWSER_DIR ?= build/browser
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
# scripts and tests draw off-screen; JupyterLab's kernels get LAB_ENV instead (above)
export MPLBACKEND ?= Agg
# idle OpenMP threads sleep (spinning threads collapse on shared cores; docs/speed.md)
export OMP_WAIT_POLICY ?= PASSIVE
# nbval's kernels and pytest's workers share two cores: keep each one at one thread
PYTEST_WORKERS ?= 2

.PHONY: setup demo test test-fast test-unit test-notebooks test-browser lab browser-deps assignments bench clean-venv

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

# the unit signal: everything but the end-to-end tests marked `slow` (tests/conftest.py);
# with one core busy PYTEST_WORKERS=0 is quicker (26 s against 40 s at 2 workers, measured)
test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -m "not slow" tests

test-notebooks: $(STAMP)
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
	  env $(LAB_ENV) REINLITE_FAST=1 $(PY) -m pytest -q -n $(PYTEST_WORKERS) --nbval-lax --nbval-current-env \
	    --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider notebooks/*.ipynb; \
	else echo "no notebooks yet"; fi

$(LAB_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[lab]'
	@touch $(LAB_STAMP)

lab: $(LAB_STAMP)
	$(LAB_CMD) $(LAB_ARGS)

$(BROWSER_STAMP): $(LAB_STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[lab,browser]'
	@touch $(BROWSER_STAMP)

# Debian's chromium and its chromedriver (nothing downloads a browser of its own)
browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	elif command -v sudo >/dev/null; then \
	  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "make test-browser needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver" >&2; exit 1; fi

# JupyterLab started by LAB_CMD in headless Chromium: an explorer's sliders are live and
# redraw their figure, a notebook's figures show; screenshots in $(BROWSER_DIR)/
test-browser: $(BROWSER_STAMP) browser-deps
	REINLITE_BROWSER_TEST=1 REINLITE_FAST=1 REINLITE_LAB_CMD='$(LAB_CMD)' REINLITE_BROWSER_DIR='$(BROWSER_DIR)' \
	  $(PY) -m pytest -q -s -p no:cacheprovider tests/browser

assignments: $(STAMP)
	$(PY) -m pip install --quiet -e '.[assignments]'
	$(MAKE) -C notebooks/assignments build

bench: $(STAMP)
	$(PY) -m reinlite.cli costs

clean-venv:
	rm -rf $(VENV)
