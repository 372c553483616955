# Two commands: `make run` starts the gateway, `make test` runs every check (starting the local
# PostgreSQL and Redis the tests use, if they are down). Both create .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test check lint typecheck unit clean services
.PHONY: bench bench-smoke

# Targets started together (`make run` and `make test` on a fresh clone) set up .venv once: the
# second waits for the lock (flock, where installed), then finds the stamp fresh and installs
# nothing. The lock is the Makefile itself, so no lock file is left behind.
LOCKED := $(if $(shell command -v flock),flock Makefile)

$(STAMP): pyproject.toml
	$(LOCKED) sh -c '[ $(STAMP) -nt pyproject.toml ] || { \
		$(PYTHON) -m venv $(VENV) && \
		$(BIN)/python -m pip install --quiet --upgrade pip && \
		$(BIN)/python -m pip install --quiet -e ".[dev]" && \
		touch $(STAMP); }'

install: $(STAMP)

run: $(STAMP)
	$(BIN)/ai-gateway serve --host $(HOST) --port $(PORT)

test: services check

# The tests use this machine's PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379).
services:
	bash scripts/services.sh
	bash scripts/browser.sh

check: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

unit: $(STAMP)
	$(BIN)/pytest --cov --cov-branch --cov-report=term-missing

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage

# Benchmark (docs/benchmarks.md): the fake upstream direct vs through the gateway, side by side.
bench: $(STAMP)
	$(LOCKED) $(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.run

bench-smoke: $(STAMP)
	$(LOCKED) $(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.run --quick --transports native,sdk --concurrency 1,16
