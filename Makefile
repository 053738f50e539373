# One-command entry points. Every target sets up .venv by itself on a fresh machine.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint format

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

# The README main job: train the default experiment (dates: GRU + Bahdanau attention) on CPU.
demo: $(STAMP)
	JAX_PLATFORMS=cpu $(VENV)/bin/attn run experiments/dates.py --workdir workdirs/dates

# The test command (README, .ci/run): lint, then the whole suite on CPU.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	JAX_PLATFORMS=cpu $(VENV)/bin/pytest -n 2 tests

# The edit loop: lint and every test not marked slow (training runs, subprocesses, Pallas'
# interpreter, property searches), in about three minutes. `make test` stays the whole suite.
test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	JAX_PLATFORMS=cpu $(VENV)/bin/pytest -n 2 -m "not slow" tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
