# SmartStart: `make up` runs the platform, `make test` checks it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
PG_BIN_DIRS := $(wildcard /usr/lib/postgresql/*/bin/initdb)

.PHONY: up down test lint install install-test postgres-server promtool browser bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Byte-compiled as pip compiles an installed package: where PYTHONDONTWRITEBYTECODE is set,
# an editable install would otherwise compile every module on every command (~40 ms).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/python -m compileall -q src/smartstart
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/python -m compileall -q src/smartstart
	touch $@ $(STAMP)

install: $(STAMP) postgres-server
install-test: $(TEST_STAMP) postgres-server

# The embedded cluster needs PostgreSQL's server binaries; install them when absent
# and we are allowed to (root on Debian/Ubuntu), otherwise `smartstart` says how.
postgres-server:
	@if [ -z "$(PG_BIN_DIRS)" ] && [ -z "$$SMARTSTART_PG_BIN" ] && ! command -v pg_ctl >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing the PostgreSQL server (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib >/dev/null; \
	  else echo "PostgreSQL server binaries not found: install postgresql, or set SMARTSTART_PG_BIN"; exit 1; fi; \
	fi

up: install
	$(BIN)/smartstart up

down:
	@if [ -x $(BIN)/smartstart ]; then $(BIN)/smartstart down; fi

lint: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# The tests check /metrics with promtool (Debian package prometheus).
promtool:
	@command -v promtool >/dev/null || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "promtool not found: install it (apt-get install prometheus)"; exit 1; fi; }

# Three workers on the two cores (the suite waits on servers, subprocesses and timeouts much
# of the time: 184 s against 227 s with two), each with its own throwaway cluster
# (tests/conftest.py); loadscope keeps a module's tests on one worker, so module-scoped
# fixtures (clusters, Brains) start once; modules go out longest first (tests/conftest.py MODULE_SECONDS), not by their test count.
# The web app's browser tests drive Debian's Chromium (Playwright cannot download its own here).
browser:
	@command -v chromium >/dev/null || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else echo "chromium not found: install it (apt-get install chromium)"; exit 1; fi; }

# Bytecode is written even where the environment says not to (PYTHONDONTWRITEBYTECODE=1):
# the suite starts hundreds of Python processes, each would compile every module again.
# mypy (~10 s of one core) runs beside the suite, whose waits leave it room; its report
# follows the suite's, and either failing fails the target.
test: install-test promtool browser
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	@$(BIN)/mypy > $(VENV)/mypy.out 2>&1 & mypy=$$!; \
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -q -n 3 --dist loadscope --no-loadscope-reorder; \
	tests=$$?; wait $$mypy; typed=$$?; echo "mypy:"; cat $(VENV)/mypy.out; \
	[ $$tests = 0 ] && [ $$typed = 0 ]

# Benchmarks need the reference app's extras and wrk (Debian package) besides the tests'.
bench: install-test
	$(BIN)/pip install -q -e '.[test,bench]'
	@command -v wrk >/dev/null || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else echo "wrk not found: install it (apt-get install wrk)"; exit 1; fi; }
	$(BIN)/python -m bench $(BENCH)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
