# Two entry points (README Quick start): `make demo` and `make test`.
# Both build their own virtualenv, so a fresh machine needs only python3, pip and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/memguard: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

.PHONY: demo test lint bench
demo: $(BIN)/memguard
	$(BIN)/python -m memguard.demo --plot demo.png

lint: $(BIN)/memguard
	$(BIN)/ruff check memguard tests benchmarks examples
	$(BIN)/mypy --strict memguard

test: $(BIN)/memguard lint
	$(BIN)/python -m pytest -q

bench: $(BIN)/memguard
	$(BIN)/python -m benchmarks
