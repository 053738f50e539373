# One-command entry points. Every target sets up .venv by itself on a fresh machine.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup services demo test test-fast lint format

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

# The sweep tests start their own PostgreSQL server. On a fresh Debian machine run as root, this
# installs the server (Debian keeps initdb off PATH, in /usr/lib/postgresql/VERSION/bin);
# elsewhere those tests skip, naming what is missing.
services:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; \
	then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing the Debian package postgresql for the PostgreSQL sweep tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql; } \
			>/dev/null || echo "WARNING: apt-get install postgresql failed:" \
			"the PostgreSQL sweep tests will be skipped"; \
	else \
		echo "WARNING: no PostgreSQL server (initdb) and no root apt-get to install the" \
			"Debian package postgresql: the PostgreSQL sweep tests will be skipped"; \
	fi

# The README main job: train the default experiment (dates: GRU + Bahdanau attention) on CPU.
demo: $(STAMP)
	JAX_PLATFORMS=cpu $(VENV)/bin/attn run experiments/dates.py --workdir workdirs/dates

# The test command (README, .ci/run): lint, then the whole suite on CPU.
test: $(STAMP) services
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	JAX_PLATFORMS=cpu $(VENV)/bin/pytest -n 2 tests

# The edit loop: lint and every test not marked slow (training runs, subprocesses, Pallas'
# interpreter, property searches): 5.7 min on 2 cores (the goal was 3). `make test` is everything.
test-fast: $(STAMP) services
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	JAX_PLATFORMS=cpu $(VENV)/bin/pytest -n 2 -m "not slow" tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
