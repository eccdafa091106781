# Every target creates or reuses .venv itself: `make demo` and `make test` are the whole set-up.
# They install exactly the versions in requirements/lock.txt (hash-checked); pyproject.toml keeps
# the compatible ranges for `pip install mtlskit`. `make test-latest` runs the suite against the
# newest releases those ranges allow, in .venv-latest; `make lock` refreshes the lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
EXTRAS := test,bench,reliability,gateway
LATEST := .venv-latest

.PHONY: demo test test-latest lock bench bench-quick reliability reliability-quick lint fmt clean

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mtlskit demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# A fresh venv each time, so what it tests is what a `pip install` would get today.
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip setuptools
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[$(EXTRAS)]'
	$(LATEST)/bin/python requirements/drift.py $(LOCK)
	$(LATEST)/bin/python -m pytest -q -p no:cacheprovider

# Needs pip-tools (pip install pip-tools) on PATH; the lock is for CPython 3.11 on Linux.
lock:
	pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	  --no-emit-find-links --extra $(EXTRAS) --output-file $(LOCK) pyproject.toml requirements/build.in

bench: $(STAMP)
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

# Crash, concurrency, hostile-client, fuzzing and TLS-scan runs (issue 11) → docs/reliability.md.
# `make reliability ARGS=--quick` (or `make reliability-quick`) is the CI form: a few minutes,
# report in reliability/out/.
reliability: $(STAMP)
	$(BIN)/python -m reliability $(ARGS)

reliability-quick: $(STAMP)
	$(BIN)/python -m reliability --quick

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) $(LATEST) build dist .pytest_cache .ruff_cache src/*.egg-info
