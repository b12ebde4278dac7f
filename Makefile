# nnlab's commands. `make train` and `make test` set up .venv on a fresh machine first.
#   make train ARGS="experiment=wave data.flip=true"
#   make sweep                        # the rings grid: hidden nodes x activations, in parallel
#   make report DIR=logs/rings/multiruns/<stamp>   # report.md, report.csv, report.png of a sweep
#   make reproduce                    # the notebook's claims over seeds: reproduce/findings.md (ARGS=--quick)
#   make tensorboard                  # every run in logs/, on http://localhost:6006
#   make mlflow                       # runs logged with logger=mlflow, on http://127.0.0.1:5000

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.installed
ARGS ?=
PORT ?= 6006
MLFLOW_PORT ?= 5000
LOGS := $(abspath logs)

.PHONY: setup train sweep report reproduce test test-slow bench lint format tensorboard mlflow clean

setup: $(READY)

$(READY): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

train: $(READY)
	$(BIN)/nnlab-train $(ARGS)

sweep: $(READY)
	$(BIN)/nnlab-train -m experiment=rings model.hidden_nodes=1,2,3,4,5,6 model.activation=sigmoid,relu,tanh $(ARGS)

report: $(READY)
	$(BIN)/nnlab-report $(DIR) $(ARGS)

# Every claim of the notebook as sweeps over seeds, judged: reproduce/findings.md (about 20 min on 2 cores).
reproduce: $(READY)
	$(BIN)/nnlab-reproduce $(ARGS)

# make test: the fast inner loop; make test-slow: the tests over 10 s (new processes: signals,
# DDP, parallel workers; Debian's Fashion-MNIST). CI runs both.
test: $(READY) lint
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

test-slow: $(READY)
	$(BIN)/python -m pytest -m slow $(ARGS)

bench: $(READY)
	$(BIN)/python benchmarks/rings.py $(ARGS)
	$(BIN)/python benchmarks/images.py $(ARGS)
	$(BIN)/python benchmarks/own_module.py
	$(BIN)/python benchmarks/cli.py
	$(BIN)/python benchmarks/search.py

lint: $(READY)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

format: $(READY)
	$(BIN)/ruff format src tests benchmarks examples
	$(BIN)/ruff check --fix src tests benchmarks examples

tensorboard: $(READY)
	$(BIN)/tensorboard --logdir logs --host 127.0.0.1 --port $(PORT)

# MLflow's UI on this machine only (127.0.0.1), over the store that logger=mlflow writes.
mlflow: $(READY)
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/mlflow ui --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1 \
	  --backend-store-uri sqlite:///$(LOGS)/mlflow/mlflow.db --default-artifact-root $(LOGS)/mlflow/artifacts

# Removes caches and build files. Runs in logs/ are never deleted by make: remove them yourself.
clean:
	rm -rf .pytest_cache .ruff_cache src/*.egg-info
	find src tests benchmarks -name __pycache__ -type d -prune -exec rm -rf {} +
