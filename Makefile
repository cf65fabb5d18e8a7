# leccr_lightning front door. Everything runs inside .venv, created from scratch by `make install`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXPERIMENT ?= configs/experiments/baseline/tiny.yaml
export OMP_NUM_THREADS ?= 1
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1
export HF_HUB_DISABLE_PROGRESS_BARS = 1
export TOKENIZERS_PARALLELISM = false

.PHONY: install train test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-cache-dir --upgrade pip
	$(BIN)/pip install -q --no-cache-dir -e ".[dev]"
	touch $@

install: $(BIN)/.installed

train: install
	$(BIN)/leccr synth --config $(EXPERIMENT)
	$(BIN)/leccr fit --config $(EXPERIMENT) --test_after_fit=true

# The suite runs in TEST_WORKERS pytest-xdist processes (one torch thread each; CI has 2 cores), tests handed out as
# workers free up. TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist worksteal tests

lint: install
	$(BIN)/ruff check leccr_lightning tests benchmarks experiments
	$(BIN)/ruff format --check leccr_lightning tests benchmarks experiments

# Every benchmark with its defaults (--device cuda when a GPU is visible); each prints its ratios with their goals.
# 18-30 minutes on the 2-core machine, most of it the million-item gallery: the metric (3 x ~40 s when quiet) and
# the faiss indexes at 1M items (IVF ~1 min, HNSW ~12 min to build).
bench: install
	$(BIN)/python benchmarks/eval_speed.py
	$(BIN)/python benchmarks/rouge_speed.py
	$(BIN)/python benchmarks/large_gallery.py
	$(BIN)/python benchmarks/train_overhead.py
	$(BIN)/python benchmarks/loss_kernels.py
	$(BIN)/python benchmarks/loader_speed.py

clean:
	rm -rf runs lightning_logs .pytest_cache
