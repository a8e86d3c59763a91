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

.PHONY: install test test-all lint fmt models mixture serve bench clean docker-check docker-smoke k8s-check

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
	$(VENV)/bin/uvicorn --factory app.main:create_app --host $(HOST) --port $(PORT) \
		--timeout-graceful-shutdown 20

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info

# The committed default bundles: one seeded command each, with one torch thread on the CPU
# (bit-reproducible on the same machine type; see README, "Models"). The committed
# char-lstm came from LSTM_DEVICE=cuda (bench/gpu.sh, 28 s on an H200; about 40 min here).
LSTM_DEVICE ?= cpu
models: install
	$(PY) -m training --threads 1 lm --out checkpoints/char-lstm --arch lstm --num-layers 2 \
		--num-hiddens 384 --embed-size 64 --dropout 0.5 --optimizer adamw --lr 0.002 \
		--weight-decay 0.01 --schedule cosine --batch-size 32 --num-steps 100 --epochs 40 \
		--seed 0 --device $(LSTM_DEVICE)
	$(PY) -m training --threads 1 lm --out checkpoints/char-rnn-scratch --arch rnn_scratch \
		--num-hiddens 512 --optimizer sgd --lr 1 --clip 1 --batch-size 32 --num-steps 35 \
		--epochs 100 --seed 0 --device cpu
	$(PY) -m training sine --out checkpoints/sine-mlp --seed 0
	$(MAKE) mixture

# The default model (README, "Models"): the n-gram component, counted from the training
# split, and the mixture of MIX_RNNS with it, its weights fit on the validation split
# (deterministic). With RNNs trained on a GPU (bench/quality_gpu.sh), name them:
#     make mixture MIX_RNNS="char-lstm-768 char-lstm-768-s1"
MIX_RNNS ?= char-lstm
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
