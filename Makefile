# The two commands a new user needs: `make run` and `make test`. See the README.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME ?= $(CURDIR)/var/dagster

.PHONY: install run test test-sqlite lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## make run: Dagster webserver + daemon (:3000), API (:8000), sandbox (:8900), supervised (scripts/supervise.py);
## Ctrl-C, SIGTERM or SIGHUP stops them all. `exec`: the supervisor is make's own child, no shell between.
run: $(STAMP)
	@exec scripts/run

## make test: the whole suite on SQLite and on a throwaway PostgreSQL 15 cluster, with a throwaway
## RabbitMQ (tests that need PostgreSQL or the broker fail here rather than skip: WRK_TEST_REQUIRE_SERVICES).
## The layers' import contracts (pyproject's [tool.importlinter]) are checked first: a breach fails the target.
## promtool (the alert rules' checks, tests/deploy/test_monitoring.py), the proof packet's fonts
## (scripts/ensure-fonts) and Debian's Chromium (the browser tests, tests/browser/) are installed first
## when missing.
test: $(STAMP)
	$(BIN)/lint-imports
	@scripts/ensure-promtool >/dev/null
	@scripts/ensure-fonts
	@scripts/ensure-chromium
	@WRK_TEST_REQUIRE_SERVICES=1 scripts/with-postgres scripts/with-rabbitmq $(BIN)/pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/mypy

## make bench [BENCH=name]: benchmarks in bench/, JSON lines, on their own throwaway PostgreSQL.
bench: $(STAMP)
	@scripts/with-postgres scripts/bench $(BENCH)

clean:
	rm -rf var .pytest_cache
