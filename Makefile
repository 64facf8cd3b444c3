# SwarmDirector: `make help` lists the targets. The same targets serve humans and .ci/run.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# reinstall whenever the dependency list changes
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: help install run cluster test browser bench real-model-check lint format migrate openapi docs clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## Create the virtualenv and install (done by the other targets on first use)

run: install ## Migrate and serve on http://$(HOST):$(PORT) (embedded SQLite, no key needed)
	$(BIN)/swarmdirector serve --host $(HOST) --port $(PORT)

cluster: install ## Local scale-out: 2 API processes on one port + 1 worker, on local PostgreSQL and Redis (CLUSTER_PORT=8000)
	$(BIN)/python scripts/cluster.py

test: install browser ## Run the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

browser: ## Make sure Debian's chromium is there for the chat page tests (installs it as root)
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium (Debian package) for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "no /usr/bin/chromium: the chat page tests will be skipped (apt-get install chromium)"; fi; \
	fi

bench: install ## Benchmarks: token path vs the bare-AutoGen floor, then chain steps (BENCH_ARGS=...; bench/results/)
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/chain_parallel.py

real-model-check: install ## Opt-in, not CI: a real model (SmolLM2-135M on llama.cpp and llama-cpp-python; ~15 min to build the first time)
	$(BIN)/python scripts/real_model_check.py $(REAL_MODEL_ARGS)

lint: install ## ruff (lint + format check) and mypy --strict on app/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install ## Format and auto-fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: install ## Apply database migrations (alembic upgrade head)
	$(BIN)/swarmdirector db upgrade

openapi: install ## Export the OpenAPI document to docs/openapi.json (a test fails when it is stale)
	$(BIN)/swarmdirector dev openapi docs/openapi.json

docs: openapi ## Regenerate the generated docs: docs/openapi.json and docs/configuration.md
	$(BIN)/python scripts/gen_config_doc.py

clean: ## Remove the virtualenv, caches and the local database
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache swarmdirector.db swarmdirector.db-wal swarmdirector.db-shm
