# One entry point for set-up, tests, training and serving. Every target bootstraps the
# virtual environment on first use: the pinned CPU torch wheel first, then the project,
# every version pinned by constraints.txt (`make lock` regenerates it).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
CONSTRAINTS := constraints.txt
HOST ?= 127.0.0.1
PORT ?= 8000
# Named corpora (the book): RNNLM_DATA_DIR when set (or `make test DATA_DIR=DIR`); else
# the cache and a verified download (`make book`).
DATA_DIR ?=
ifneq ($(DATA_DIR),)
export RNNLM_DATA_DIR ?= $(DATA_DIR)
endif

.PHONY: install lock book check test test-all test-system test-browser test-faults test-lmeval fuzz soak \
	lint fmt models mixture serve bench clean docker-check docker-smoke k8s-check

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(CONSTRAINTS) torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Pins every dependency of every extra for Python 3.11+ on any platform, from PyPI, with
# torch at the version above. As constraints (not requirements) the CUDA packages that
# PyPI's torch names stay inert beside the CPU wheel.
lock:
	test -x $(VENV)/bin/uv || { test -x $(PY) || $(PYTHON) -m venv $(VENV); $(PY) -m pip install -q uv; }
	printf 'torch==%s\n' $(TORCH_VERSION) | $(VENV)/bin/uv pip compile pyproject.toml - \
		--all-extras --universal --python-version 3.11 --native-tls --quiet \
		--custom-compile-command 'make lock' -o $(CONSTRAINTS)

# Finds the book (data dir, cache) or downloads it into the cache, checked by sha1. Never
# fails: offline, the tests that need the book skip and say how to supply it.
book: install
	$(PY) -m scripts.book

# The fast checks, exactly as CI runs them (also .pre-commit-config.yaml): every test but
# those of the markers pyproject.toml deselects (system, browser, lmeval: targets below).
# pytest runs on every core (pytest-xdist; `make test TEST_WORKERS=0` runs it in one
# process); worksteal gives each worker a contiguous half of the tests (a module's
# fixtures are built once) and lets an idle worker take tests from the other's queue.
TEST_WORKERS ?= auto
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal
check: install book
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PYTEST)

test: check

# Every test: the fast checks, the tests that run the project as processes (the live
# server, torchrun, kill -9 over many rounds), the playground in a real browser, fuzzing of
# the live API, lm-evaluation-harness as a client, and a short soak (all of .ci/run but the
# deployment checks: `make k8s-check docker-smoke`).
test-all: check test-system test-browser fuzz test-lmeval soak

# The tests marked `system`: the live server (`python -m app`) end to end, torchrun
# ranks, the token file's memory in children, kill -9 during bundle saves (KILL_ROUNDS).
KILL_ROUNDS ?= 40
test-system: install book
	RNNLM_KILL_ROUNDS=$(KILL_ROUNDS) $(PYTEST) -m system

test-browser: install book
	scripts/browser-test.sh

test-lmeval: install
	$(PY) -m pytest -q -m lmeval tests/app/test_lm_eval.py

test-faults: install
	RNNLM_KILL_ROUNDS=$(KILL_ROUNDS) $(PY) -m pytest -q -m system tests/models/test_bundle.py -k kill_9

FUZZ_EXAMPLES ?= 40
fuzz: install book
	scripts/fuzz.sh $(FUZZ_EXAMPLES)

SOAK_SECONDS ?= 60
soak: install book
	$(PY) -m bench.soak --seconds $(SOAK_SECONDS) --workers 16

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

fmt: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# uvicorn with the server's limits (app/server.py: head and body deadlines, connections).
serve: install
	$(PY) -m app --host $(HOST) --port $(PORT)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info

# The committed default bundles: one seeded command each, with one torch thread on the CPU
# (bit-reproducible on the same machine type; see README, "Models"). The committed LSTMs
# came from LSTM_DEVICE=cuda (bench/quality_gpu.sh: about 70 s each on an H200, side by
# side; hours on 1 CPU thread here).
LSTM_DEVICE ?= cpu
models: install
	$(PY) -m training --threads 1 lm --out checkpoints/char-lstm --arch lstm --num-layers 2 \
		--num-hiddens 384 --embed-size 64 --dropout 0.5 --optimizer adamw --lr 0.002 \
		--weight-decay 0.01 --schedule cosine --batch-size 32 --num-steps 100 --epochs 40 \
		--seed 0 --device $(LSTM_DEVICE)
	DEVICE=$(LSTM_DEVICE) PY=$(PY) THREADS=1 OUT=runs/lstms bench/quality_gpu.sh
	$(PY) -m training --threads 1 lm --out checkpoints/char-rnn-scratch --arch rnn_scratch \
		--num-hiddens 512 --optimizer sgd --lr 1 --clip 1 --batch-size 32 --num-steps 35 \
		--epochs 100 --seed 0 --device cpu
	$(PY) -m training sine --out checkpoints/sine-mlp --seed 0
	$(MAKE) mixture

# The default model (README, "Models"): the n-gram component, counted from the training
# split, and the mixture of MIX_RNNS with it, its weights fit on the validation split
# (deterministic). The RNN components are those of `make models`.
MIX_RNNS ?= char-lstm-512 char-lstm
mixture: install
	$(PY) -m training --threads 1 ngram --out checkpoints/char-kn10 --order 10 --smoothing kn
	$(PY) -m training --threads 1 mixture --out checkpoints/char-mix --components $(MIX_RNNS) char-kn10

# On-demand benchmarks (docs/benchmarks.md); each prints JSON lines.
bench: install
	$(PY) -m bench.generation
	$(PY) -m bench.concurrency
	$(PY) -m bench.perplexity
	$(PY) -m bench.ngrams --large 100
	$(PY) -m bench.training
	$(PY) -m bench.startup

# Containers (docs/deploy.md): static checks (hadolint, compose config and schema), and the
# end-to-end smoke (build, compose up, requests, teardown; "SKIPPED: ..." with no engine).
docker-check:
	scripts/docker-check.sh

docker-smoke:
	scripts/docker-smoke.sh

# Kubernetes (docs/deploy.md): render every overlay with kubectl kustomize and validate the
# objects against the Kubernetes schemas offline, then the manifests' own promises.
k8s-check:
	scripts/k8s-check.sh
