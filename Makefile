# Two commands for a fresh machine:  `make demo`  and  `make test`  (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-unit lint stack-up stack-down stack-status system-deps clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

install: $(BIN)/.installed  ## virtual environment with the project and its [dev] tools

demo: install  ## install, then run the main job on its embedded default (no services needed)
	$(BIN)/inspector run

system-deps:  ## Debian packages for the local stack (Java, Maven, Redis, Prometheus), if missing
	deploy/local/install-system-deps

test: install system-deps  ## the whole suite; integration tests use (or start) the local stack
	$(BIN)/python -m pytest

test-unit: install  ## only the tests that need no services
	$(BIN)/python -m pytest -m "not integration"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

stack-up:
	deploy/local/stack up
stack-down:
	deploy/local/stack down
stack-status:
	deploy/local/stack status

clean:
	rm -rf $(VENV) .stack .mypy_cache .ruff_cache .pytest_cache
