# convolab: `make demo` trains the tutorials' CNN on Fashion-MNIST; `make test` runs the tests.
# Both create .venv when it is absent and install what they need into it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.convolab-installed
PYTEST_ARGS ?=
# test processes (pytest-xdist), each with one thread (tests/conftest.py); 0 runs the suite in this process
PYTEST_WORKERS ?= 2
# worksteal: a worker that runs out of tests takes half of the other's queue (the suite's tests differ 1000-fold in length)
PYTEST := $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal

.PHONY: help install data browser postgres demo test test-slow test-all test-full lint bench clean

help:
	@echo "make demo      set up, get Fashion-MNIST, train tutorial_cnn for 5 epochs into runs/demo"
	@echo "make test      set up, run the test suite (slow tests excluded)"
	@echo "make test-all  the whole suite, slow tests included (what CI runs)"
	@echo "make test-full test-all plus the exhaustive checks over every zoo model (about 20 minutes more)"
	@echo "make bench     benchmarks/tutorial_speed.py: the tutorial's loop against convolab train"
	@echo "make lint      ruff"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

install: $(STAMP)

data: install
	@bash scripts/get-fashion-mnist.sh $(BIN)/convolab

browser:
	@bash scripts/get-chromium.sh

postgres:
	@bash scripts/get-postgres.sh >/dev/null

demo: data
	$(BIN)/convolab train --model tutorial_cnn --data fashion-mnist --epochs 5 --out runs/demo --overwrite

test: data browser
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

test-slow: data browser postgres
	$(PYTEST) -m "slow and not exhaustive" $(PYTEST_ARGS)

test-all: data browser postgres
	$(PYTEST) -m "not exhaustive" $(PYTEST_ARGS)

test-full: data browser postgres
	$(PYTEST) $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks

bench: data
	$(BIN)/python benchmarks/tutorial_speed.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
