# Touchpoint: `make up` runs the whole stack, `make test` runs the whole suite.
# Both work from a fresh clone: they create .venv and install the project first.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install up test test-unit lint schemas bench browser clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 needed"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

up: install
	$(VENV)/bin/touchpoint up

# Debian's chromium + chromium-driver for tests/browser (quick when already installed).
browser:
	./scripts/install-browser

test: install browser
	$(PY) -m pytest -q -p no:cacheprovider

test-unit: install
	$(PY) -m pytest -q tests/unit tests/contract

lint: install
	$(VENV)/bin/ruff check shared services touchpoint tests bench
	$(VENV)/bin/mypy shared services touchpoint

schemas: install
	$(PY) -m shared.contracts.export docs/schemas

bench: install
	$(PY) bench/pipeline.py

clean:
	rm -rf $(VENV) .touchpoint .pytest_cache
