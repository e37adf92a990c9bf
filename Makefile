# Two commands set everything up on a fresh machine:
#   make demo   - install into .venv, then compress a quickly trained teacher on local data (offline, ~3 min)
#   make test   - install into .venv, then run the default (offline, fast) test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test test-slow lint bench-quick

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) examples/demo.py

test: install
	$(PY) -m pytest -m "not slow" -q -n 2

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test-slow: install
	$(PY) -m pytest -m slow -q

bench-quick: install
	$(PY) -m pip install -q torch-pruning
	$(PY) benchmarks/compare.py --quick
