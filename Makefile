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

.PHONY: demo test lint bench docs docs-build system-packages
demo: $(BIN)/memguard
	$(BIN)/python -m memguard.tools.demo --plot demo.png

lint: $(BIN)/memguard
	$(BIN)/ruff check memguard tests benchmarks examples
	$(BIN)/mypy --strict memguard

# The tests marked slow (sustained load on real servers, real memory) run in .ci/run, after this,
# one at a time; these fast ones run in two processes (pytest-xdist), most of them wait on a
# subprocess, a server or a sleep.
test: $(BIN)/memguard system-packages lint docs-build
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

# Installs what the tests drive for real (as root), else says in one line what to install.
system-packages:
	.ci/system-packages

# The documentation site (mkdocs.yml): `make docs` serves it on 127.0.0.1:8000 with live
# reload; `make test` (and so CI) builds it with --strict, so a broken link or reference fails.
docs: $(BIN)/memguard
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

docs-build: $(BIN)/memguard
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict  # not --quiet: it hides the warnings --strict counts

bench: $(BIN)/memguard
	$(BIN)/python -m benchmarks
