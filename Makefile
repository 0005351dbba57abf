# Touchpoint: `make up` runs the whole stack, `make test` runs the whole suite.
# Both work from a fresh clone: they create .venv and install the project first.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# Hashed, fully pinned dependencies (Python 3.11, Linux): everything for development and
# tests (extras dev + local) in requirements.lock; what the container image runs in
# requirements-prod.lock, at the same versions. `make lock` regenerates both.
LOCK      := requirements.lock
PROD_LOCK := requirements-prod.lock
LOCK_FLAGS ?=
UV_COMPILE = $(VENV)/bin/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
             --python-platform linux --quiet $(LOCK_FLAGS)

.PHONY: install up test test-unit lint schemas bench browser clean lock

$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 needed"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
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

# Re-resolve after a change to pyproject.toml's dependencies: versions already locked are
# kept where they still fit (`make lock LOCK_FLAGS=--upgrade` takes the newest of all).
# uv reads PyPI, or UV_INDEX_URL / UV_FIND_LINKS, reusing its cache.
lock: $(VENV)/bin/uv
	$(UV_COMPILE) --extra dev --extra local --output-file $(LOCK)
	$(UV_COMPILE) --constraint $(LOCK) --output-file $(PROD_LOCK)

$(VENV)/bin/uv:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet 'uv>=0.5'

clean:
	rm -rf $(VENV) .touchpoint .pytest_cache

# The fault suite in full, repeated (TOUCHPOINT_SOAK_ROUNDS rounds, default 3); `make test`
# runs one round of each scenario. Figures are printed (-s).
.PHONY: soak
soak: install
	TOUCHPOINT_SOAK=1 $(PY) -m pytest -q -s -p no:cacheprovider tests/reliability
