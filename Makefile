# The two commands of the README: `make demo` (the main job) and `make test`.
# Both create .venv and install lwd on first use; torch==2.13.0 goes in first because
# on our machines it is a local CPU build and anything later must not pull another.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-installed
RAY_STAMP := $(VENV)/.stamp-ray
LEROBOT_STAMP := $(VENV)/.stamp-lerobot

.PHONY: setup demo test test-fast lint bench ray-cluster bench-ray-node

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The `ray` extra, for the Ray fleet's tests (tests/fleet/test_ray_fleet.py): `make test`
# installs it, `make demo` does not (the embedded default is Ray-free).
$(RAY_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	touch $(RAY_STAMP)

# The `lerobot` extra (pyarrow, av), for LeRobot dataset export/import and its tests
# (tests/data/test_lerobot.py): `make test` installs it, `make demo` does not.
$(LEROBOT_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,lerobot]'
	touch $(LEROBOT_STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lwd demo

# The suite runs on TEST_WORKERS processes (pytest-xdist), one test file per worker at a
# time so that a file's module fixtures are built once; most tests use about one core.
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile

test: $(STAMP) $(RAY_STAMP) $(LEROBOT_STAMP)
	$(PY) -m pytest -q $(PYTEST_PARALLEL)

# Lint and format check (CI runs it before the tests); `ruff format .` fixes formatting.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The developers' loop: everything but the tests marked slow (real pipelines: demo,
# experiment, deploy, fleet bench, kill-and-recover). `make test` and CI run all.
test-fast: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_PARALLEL) -m "not slow"

bench: $(STAMP)
	$(VENV)/bin/lwd bench sim

# A local multi-node Ray cluster on this machine (loopback only, in a private network
# namespace; needs root): `make ray-cluster` runs a shell whose `ray.init("auto")` and
# `lwd deploy --fleet ray --ray-address auto` see 3 nodes; exiting the shell stops them.
ray-cluster: $(RAY_STAMP)
	tools/netns-run $(PY) tools/ray_cluster.py --nodes 3 --cpus-per-node 1 -- bash

# A Ray robot node's fleet ÷ bare (docs/benchmarks.md, fleet section): a 2-node cluster whose
# head (the learner's node: ingest, GCS) runs on core 0 and whose robot node runs on core 1,
# as separate machines; the bench's bare replay runs on core 1 too. CHECKPOINT=... ARGS=...
CHECKPOINT ?= runs/offline/final
bench-ray-node: $(RAY_STAMP)
	tools/netns-run $(PY) tools/ray_cluster.py --nodes 2 --cpus-per-node 1 --head-cpus 0 \
		--node-cores 0 1 --command-cores 1 -- $(VENV)/bin/lwd bench fleet --checkpoint $(CHECKPOINT) \
		--fleet ray --ray-address auto --workers 1 --robots-per-worker 80 --out runs/bench/fleet_ray_node.json $(ARGS)
