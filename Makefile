# The two commands of the contract: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test test-unit test-integration test-e2e lint bench soak fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/tidings serve

test: $(STAMP)
	scripts/ensure-test-services
	$(PY) -m pytest

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

test-integration: $(STAMP)
	scripts/ensure-test-services
	$(PY) -m pytest tests/integration

test-e2e: $(STAMP)
	scripts/ensure-test-services
	$(PY) -m pytest tests/e2e

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m bench

# The long soak (docs/reliability.md): SOAK_MESSAGES through `tidings serve` on SQLite, then
# through 2 `tidings api` + 3 `tidings worker` on PostgreSQL, with kill -9s and SMTP faults.
SOAK_MESSAGES ?= 100000
SOAK_RATE ?= 400
SOAK_ARGS ?=
soak: $(STAMP)
	scripts/ensure-test-services
	$(PY) -m tests.support.soak --backend sqlite --messages $(SOAK_MESSAGES) --rate $(SOAK_RATE) $(SOAK_ARGS)
	$(PY) -m tests.support.soak --backend postgresql --apis 2 --workers 3 --messages $(SOAK_MESSAGES) --rate $(SOAK_RATE) $(SOAK_ARGS)
	$(MAKE) fuzz FUZZ_CASES=$(SOAK_FUZZ_CASES)

# Schemathesis over every operation of /openapi.json (tests/integration/test_fuzz_api.py):
# `make test` runs it with 5,000 cases, `make soak` with SOAK_FUZZ_CASES.
FUZZ_CASES ?= 5000
SOAK_FUZZ_CASES ?= 50000
fuzz: $(STAMP)
	TIDINGS_FUZZ_CASES=$(FUZZ_CASES) $(PY) -m pytest -q tests/integration/test_fuzz_api.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
