# `make help` lists the targets. Every target sets up the venv first if pyproject.toml changed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

# Embedded defaults: everything under .storage/ (git-ignored), Prefect offline and quiet.
export PREFECT_HOME ?= $(CURDIR)/.storage/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export MLFLOW_DISABLE_TELEMETRY ?= true
# No download progress bars in the logs when a model is loaded. (No comment after a value: make keeps the spaces.)
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR ?= false
export DO_NOT_TRACK ?= true

.DEFAULT_GOAL := help
.PHONY: help setup run test test-fast lint k8s format serve demo monitor up down stack-status deploy worker mlflow-ui prefect-ui bench clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## create .venv and install the project with its test tools

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	mkdir -p $(PREFECT_HOME)
	touch $@

run: setup ## train the demo model end to end: python flows/train.py
	mkdir -p $(PREFECT_HOME)
	$(BIN)/python flows/train.py

test: setup lint ## lint, the fast tier, then the integration tier (real Prefect, MLflow, Ray Serve, S3, the stack)
	mkdir -p $(PREFECT_HOME)
	$(BIN)/python -m pytest -m "not integration"
	$(BIN)/python -m pytest -m integration --durations=20

test-fast: setup lint ## lint and the unit tests only: no servers, about two minutes
	$(BIN)/python -m pytest -m "not integration"

lint: setup ## ruff, the import direction (import-linter), the Dockerfile (hadolint), the CI template, k8s manifests
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows templates/github/workflows/tabloop.yml
	$(BIN)/python deployments/kubernetes.py --check

k8s: setup ## regenerate deployments/k8s/ from serving/config.yaml (RayService) and the Prefect job template
	$(BIN)/python deployments/kubernetes.py

format: setup ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

serve: setup ## serve every declared model's @champion (models/) on a local Ray: http://127.0.0.1:8000/docs
	$(BIN)/python -m serving.ray_env $(BIN)/serve run serving/config.yaml

demo: setup ## the loop: serve, drifted traffic, monitor, retrain subflow, gate, hot swap
	mkdir -p $(PREFECT_HOME)
	$(BIN)/python deployments/demo_loop.py

monitor: setup ## run the monitoring flow once on the prediction log since its last run
	mkdir -p $(PREFECT_HOME)
	$(BIN)/python flows/monitor.py

up: setup ## start the local stack: Prefect server, MLflow server + S3 (moto), worker, Ray Serve; deploy all
	$(BIN)/python deployments/stack.py up

down: ## stop the local stack (harmless when it is not running)
	@if [ -x $(BIN)/python ]; then $(BIN)/python deployments/stack.py down; else echo "nothing was running"; fi

stack-status: setup ## which services of the local stack are up
	$(BIN)/python deployments/stack.py status

deploy: setup ## work pool, prefect.yaml deployments and automations on the server at PREFECT_API_URL
	$(BIN)/python deployments/apply.py

worker: setup ## run a process worker for the tabloop-process pool (PREFECT_API_URL must be set)
	$(BIN)/prefect worker start --pool tabloop-process

mlflow-ui: setup ## browse runs, models and artifacts at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.storage/mlflow.db --host 127.0.0.1 --port 5000

prefect-ui: setup ## browse flow runs and artifacts at http://127.0.0.1:4200
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

bench: setup ## framework overhead of the training flow against a bare Optuna script
	$(BIN)/python benchmarks/train_overhead.py

clean: down ## stop the stack, delete generated state (.storage/: MLflow store, data snapshots, Prefect DB)
	rm -rf .storage
