VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)  ## the crash demo on the embedded default: SQLite store + SQLite broker
	$(PY) -m examples.orders.demo

test: $(STAMP)  ## the whole suite; tests whose service is down are skipped with the reason
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP)  ## needs PostgreSQL and Redis on localhost
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_beat.py

clean:
	rm -rf $(VENV) demo-run shipping-run .pytest_cache .mypy_cache .ruff_cache
