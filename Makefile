# One entry point for set-up, tests, training and serving. Every target bootstraps the
# virtual environment on first use: the pinned CPU torch wheel first, then the project.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
DATA_DIR ?= $(abspath ../shared/data)
HOST ?= 127.0.0.1
PORT ?= 8000
export RNNLM_DATA_DIR ?= $(DATA_DIR)

.PHONY: install test test-all lint fmt models serve bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m 'not gpu and not docker'

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

fmt: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

serve: install
	$(VENV)/bin/uvicorn --factory app.main:create_app --host $(HOST) --port $(PORT)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
