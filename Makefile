# Two entry points for users: `make run` and `make test`. Both install first.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install run test lint bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	touch $@

run: install
	$(VENV)/bin/fractal serve --no-auth

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check fractal_core db app tests benchmarks
	$(VENV)/bin/ruff format --check fractal_core db app tests benchmarks
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/run_all.py
