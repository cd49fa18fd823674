# The two commands of the README: `make demo` (the main job) and `make test`.
# Both create .venv and install lwd on first use; torch==2.13.0 goes in first because
# on our machines it is a local CPU build and anything later must not pull another.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-installed

.PHONY: setup demo test test-fast lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lwd demo

test: $(STAMP)
	$(PY) -m pytest -q

# Lint and format check (CI runs it before the tests); `ruff format .` fixes formatting.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The developers' loop: everything but the tests marked slow (real pipelines: demo,
# experiment, deploy, fleet bench, kill-and-recover). `make test` and CI run all.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(VENV)/bin/lwd bench sim
