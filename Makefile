VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)  ## the crash demo on the embedded default: SQLite store + SQLite broker
	$(PY) -m examples.orders.demo

test: $(STAMP)  ## the whole suite; tests whose service is down are skipped with the reason
	$(PY) -m pytest

lint: $(STAMP)  ## ruff (check and format), mypy --strict, the layer contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

docs: $(STAMP)  ## the documentation site in site/; a broken link or reference fails
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: $(STAMP)  ## needs PostgreSQL and Redis on localhost
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/bench_summary.py
	$(PY) benchmarks/bench_beat.py

clean:
	rm -rf $(VENV) demo-run shipping-run site .pytest_cache .mypy_cache .ruff_cache
