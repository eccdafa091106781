# Every target creates or reuses .venv itself: `make demo` and `make test` are the whole set-up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-quick reliability reliability-quick lint fmt clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench,reliability,gateway]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mtlskit demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

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
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache src/*.egg-info
